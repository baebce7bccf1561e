"""How long napari's process holds the interpreter while it hands a training job to the
Train dock's training process (``training/process.py``).

A run from viewer layers sends their volumes to the child. Pickled whole, the volumes are
copied while the interpreter lock is held, and napari's GUI thread can do nothing
meanwhile; ``_send_job`` sends their raw buffers out of band instead. A thread ticking
every 1 ms stands in for the GUI thread; the longest gap between its ticks while the job
is sent is the stall. Both ways, alternately, in one run::

    .venv/bin/python benchmarks/send_job.py [--volumes 4] [--size 256] [--repeats 2]

Writes ``benchmarks/results/send_job-<host>-<date>.json`` with the hardware.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _read(conn, out, how: str) -> None:
    """The child: receive the job, send back each volume's sum and whether all are writable."""
    from napari_medgan.training import process as proc

    job = proc._recv_job(conn) if how == "out of band" else conn.recv()
    out.send([float(v.sum()) for v in job[1]] + [all(v.flags.writeable for v in job[1])])


def measure(how: str, volumes: list[np.ndarray]) -> dict:
    from napari_medgan.training import process as proc

    ctx = mp.get_context("spawn")
    job_out, job_in = ctx.Pipe(duplex=False)
    answer_out, answer_in = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read, args=(job_out, answer_in, how))
    child.start()
    time.sleep(3.0)  # the child has started and waits for the job
    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    if how == "out of band":
        proc._send_job(job_in, ("job", volumes))
    else:
        job_in.send(("job", volumes))
    t1 = time.perf_counter()
    answer = answer_out.recv()
    stop.set()
    ticker.join()
    child.join()
    gaps = np.diff([t for t in ticks if t0 - 0.01 <= t <= t1 + 0.01])
    return {"how": how, "send_s": round(t1 - t0, 3),
            "worst_tick_gap_ms": round(float(gaps.max()) * 1000, 1),
            "arrived_equal": bool(np.allclose(answer[:-1], [float(v.sum()) for v in volumes])),
            "arrived_writable": bool(answer[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _hardware import describe_hardware, hardware_slug

    rng = np.random.default_rng(0)
    volumes = [rng.random((args.size,) * 3, dtype=np.float32) for _ in range(args.volumes)]
    rows = [measure(how, volumes) for _ in range(args.repeats)
            for how in ("pickled whole", "out of band")]
    info = describe_hardware("cpu")
    result = {"benchmark": "send_job", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "settings": {"volumes": args.volumes, "size": args.size,
                           "megabytes": round(sum(v.nbytes for v in volumes) / 1e6)},
              "rows": rows, "hardware": info}
    out = HERE / "results" / (f"send_job-{hardware_slug(info, 'cpu')}-"
                              f"{time.strftime('%Y%m%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for row in rows:
        print(row)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
