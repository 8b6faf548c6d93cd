"""Build hooks (the rest of the metadata is in pyproject.toml): wheels and sdists carry the built web client.

Where the web client comes from, in this order:
1. `CHATWIRE_WEB_DIST`: a directory holding a build (index.html and assets), used as it is;
2. a checkout (`web/package.json` beside this file): `web/dist` when it is newer than every source of the web
   client, else `npm ci` (when node_modules is missing or older than the lock) and `npm run build` (Node.js 20+);
3. an unpacked sdist: the build it already carries in `chatwire/static` (so a wheel built from an sdist needs no
   Node.js).
Editable installs (`pip install -e .`) copy nothing: the server then serves `web/dist` directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
DIST = WEB / "dist"
STAMP = DIST / ".stamp"  # written by the Makefile and by this hook after a build
BUNDLED = ROOT / "chatwire" / "static"


def _web_sources() -> list[Path]:
    files = [p for p in (WEB / "src").rglob("*") if p.is_file()]
    names = ("index.html", "vite.config.ts", "tsconfig.json", "package.json", "package-lock.json")
    return files + [WEB / n for n in names if (WEB / n).exists()]


def _up_to_date() -> bool:
    if not (DIST / "index.html").exists() or not STAMP.exists():
        return False
    built = STAMP.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _web_sources())


def _npm(*args: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "chatwire: building the package needs Node.js 20+ and npm to build the web client (web/); "
            "install them, or set CHATWIRE_WEB_DIST to an existing build, or build from the sdist"
        )
    subprocess.run([npm, *args, "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True)


def web_build() -> Path | None:
    """The directory of the built web client to package; None when the sources already carry it."""
    given = os.environ.get("CHATWIRE_WEB_DIST")
    if given:
        path = Path(given).resolve()
        if not (path / "index.html").exists():
            raise SystemExit(f"chatwire: CHATWIRE_WEB_DIST={given!r} holds no index.html")
        return path
    if (WEB / "package.json").exists():
        if not _up_to_date():
            installed = WEB / "node_modules" / ".installed"
            lock = WEB / "package-lock.json"
            if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
                _npm("ci")
                installed.touch()
            _npm("run", "build", "--silent")
            STAMP.touch()
        return DIST
    if (BUNDLED / "index.html").exists():
        return None
    raise SystemExit("chatwire: no web client to package (no web/ sources, no chatwire/static)")


def _copy_build(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".stamp"))


class build_py(_build_py):
    """Copies the built web client into the wheel's chatwire/static."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = web_build()
        if source is not None:
            _copy_build(source, Path(self.build_lib) / "chatwire" / "static")


class sdist(_sdist):
    """Puts the built web client into the sdist's chatwire/static (a wheel built from it needs no Node.js)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        source = web_build()
        if source is not None:
            _copy_build(source, Path(base_dir) / "chatwire" / "static")


setup(cmdclass={"build_py": build_py, "sdist": sdist})
