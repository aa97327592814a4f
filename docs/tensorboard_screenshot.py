"""The book's explosion run as TensorBoard shows it when it opens, in a real browser: a screenshot of
its Time Series dashboard with its default settings (smoothing 0.6, outliers ignored in the chart
scaling), filtered to the views that those defaults cannot hide, `grad_norm_pre_log10/*` and
`grad_norm_pre_peak/*`.

    python docs/tensorboard_screenshot.py                       # trains clip=none in a temp dir
    python docs/tensorboard_screenshot.py --run RUN_DIR --filter grad_norm_pre/   # any run, any tags

Needs Chromium (Debian: `apt-get install chromium`). TensorBoard listens on 127.0.0.1 only and is
stopped at the end. Writes docs/tensorboard_none.png unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_tags(port: int, tag: str, timeout: float = 60.0) -> None:
    """Until TensorBoard has read the run's events as far as `tag`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                if any(tag in tags for tags in json.load(r).values()):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard on port {port} did not show {tag} within {timeout:.0f} s")


def drawn_lines(png: Path) -> int:
    """Pixels of the charts' dark line colour: 0 while the charts are still empty."""
    from matplotlib.image import imread

    rgb = imread(png)[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r < 0.35) & (g < 0.4) & (b > r + 0.05) & (b < 0.5)).sum())


def screenshot(url: str, out: Path, size=(1400, 1750), tries: int = 3) -> None:
    """A headless Chromium screenshot of `url`, taken again (up to `tries`) while no chart line is
    drawn yet. `forceSVG` has TensorBoard draw its charts as SVG: software WebGL in a headless
    browser leaves them blank."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: no chromium on PATH (Debian: apt-get install chromium)")
    for attempt in range(1, tries + 1):
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=60000",
                            f"--screenshot={out}", url],
                           check=True, capture_output=True, timeout=180)
        if drawn_lines(out) > 5000:  # an empty page has a few hundred (text)
            return
        print(f"attempt {attempt}: the charts were not drawn yet", file=sys.stderr)
    sys.exit(f"error: {out}: no chart drawn after {tries} tries")


def book_run(work: Path) -> Path:
    run_dir = work / "clip_none"
    subprocess.run([sys.executable, "-m", "srn_lightning.train", "clip=none", f"hydra.run.dir={run_dir}",
                    f"data.dir={work / 'data'}"], check=True, cwd=REPO)
    return run_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python docs/tensorboard_screenshot.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a run dir (default: train clip=none in a temp dir)")
    parser.add_argument("--filter", default="grad_norm_pre_", help="TensorBoard's tag filter")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tensorboard_none.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        run_dir = args.run or book_run(Path(work))
        port = free_port()
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir),
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_tags(port, "grad_norm_pre_peak/W")
            url = f"http://127.0.0.1:{port}/?forceSVG=true&tagFilter={args.filter}#timeseries"
            screenshot(url, args.out)
        finally:
            board.terminate()
            board.wait(timeout=30)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
