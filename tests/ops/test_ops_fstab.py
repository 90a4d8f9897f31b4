"""`mount -t fuse.r2fs`, /etc/fstab lines (`mount DIR`, `mount -a`) and the documented
systemd mount unit, through the real mount(8) and umount(8), with no PATH at all.

`make install` (what the README says to run) links the helper as
/sbin/mount.fuse.r2fs; the links found before the test are put back after it.
"""

from __future__ import annotations

import configparser
import os
import subprocess

import pytest

import opshelp
from fusehelp import BUCKET, Mount, make_cluster, published

from r2fs.cli.fuse_cmds import is_r2fs_mount

UNIT = os.path.join(opshelp.REPO, "contrib", "systemd", "srv-demo.mount")


@pytest.fixture(scope="module")
def installed():
    if os.geteuid() != 0:
        pytest.skip("mount(8) helpers are installed in /sbin (root)")
    with opshelp.installed_links():
        assert os.path.realpath("/sbin/mount.fuse.r2fs").startswith(os.path.realpath(opshelp.REPO))
        yield


def bare(*cmd: str) -> subprocess.CompletedProcess:
    """A command as boot or `sudo` runs it: no PATH, no HOME."""
    return subprocess.run(list(cmd), env={}, capture_output=True, text=True, timeout=180)


@pytest.fixture
def setup(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    mp = tmp_path / "mnt"
    mp.mkdir()
    m = Mount(cluster, BUCKET, str(mp))
    try:
        yield cluster, m
    finally:
        m.stop()


def test_fstab_line_mount_dir_and_mount_a(installed, setup, tmp_path):
    cluster, m = setup
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# r2fs\n{BUCKET}  {m.path}  fuse.r2fs  cluster={cluster},attr_timeout=2,"
                     "_netdev,nofail,x-systemd.automount  0  0\n")
    out = bare("/usr/bin/mount", "-T", str(fstab), m.path)  # `mount DIR`
    assert out.returncode == 0, out.stderr
    assert is_r2fs_mount(m.path)
    with open(m.p("via-fstab"), "w") as f:
        f.write("written through an fstab mount")
    assert published(m, "via-fstab").size == 30
    out = bare("/usr/bin/umount", m.path)
    assert out.returncode == 0, out.stderr
    assert not is_r2fs_mount(m.path)

    out = bare("/usr/bin/mount", "-a", "-T", str(fstab))
    assert out.returncode == 0, out.stderr
    assert is_r2fs_mount(m.path)
    with open(m.p("via-fstab")) as f:
        assert f.read() == "written through an fstab mount"
    again = bare("/usr/bin/mount", "-a", "-T", str(fstab))  # already mounted: nothing to do
    assert again.returncode == 0, again.stderr


def test_mount_t_fuse_r2fs_and_its_errors(installed, setup, tmp_path):
    cluster, m = setup
    out = bare("/usr/bin/mount", "-t", "fuse.r2fs", BUCKET, m.path, "-o", f"cluster={cluster}")
    assert out.returncode == 0, out.stderr
    assert is_r2fs_mount(m.path) and os.listdir(m.path) == []
    assert bare("/usr/bin/umount", m.path).returncode == 0
    wrong = bare("/usr/bin/mount", "-t", "fuse.r2fs", BUCKET, m.path, "-o",
                 f"cluster={tmp_path / 'typo'}")
    assert wrong.returncode != 0
    assert wrong.stderr.strip() == (f"r2fs: {tmp_path / 'typo'} is not an r2fs cluster (no such "
                                    f"directory); to create one there: r2fs --cluster "
                                    f"{tmp_path / 'typo'} init")
    assert not is_r2fs_mount(m.path)


def test_documented_systemd_unit(installed, setup):
    """What systemd does with the unit: `mount -t Type -o Options What Where`, then umount."""
    cluster, m = setup
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    section = unit["Mount"]
    assert section["Type"] == "fuse.r2fs" and section["What"] == "demo"
    options = section["Options"].replace("/var/lib/r2fs", cluster)
    out = bare("/usr/bin/mount", "-t", section["Type"], "-o", options, BUCKET, m.path)
    assert out.returncode == 0, out.stderr
    assert is_r2fs_mount(m.path)
    out = bare("/usr/bin/umount", m.path)
    assert out.returncode == 0 and not is_r2fs_mount(m.path)
