"""Runs a sanitizer build of skyhook_scan_local (ASan + UBSan, `make sanitize`) over
corrupted partitions x valid requests and over malformed requests x valid partitions.

A finding is a sanitizer report, a signal, an exit status that is no errno of the
runner, or a run past --timeout.  Errors are fine: they are what bad input must give.

    python -m benchmarks.sanitize_corpus --runner build-asan/bin/skyhook_scan_local \
        [--requests 1000] [--objects 200] [--out build-asan/findings]

Prints a JSON summary (runs, exit statuses, findings) and exits 1 when there are findings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import malformed

SAN_ENV = {
    # a sanitizer report exits with a status no errno has
    "ASAN_OPTIONS": "exitcode=223:detect_leaks=1:abort_on_error=0:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "halt_on_error=1:exitcode=224:print_stacktrace=1",
}
SAN_STATUS = {223: "asan", 224: "ubsan"}


def run_one(runner: Path, request: Path, obj: Path, out: Path, timeout: float) -> tuple[str, str]:
    """(outcome, stderr): outcome "ok", "errno N", or a finding: "asan", "ubsan",
    "signal N", "hang", "status N"."""
    env = dict(os.environ, **SAN_ENV)
    try:
        r = subprocess.run([str(runner), str(request), str(obj), str(out)], env=env,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", ""
    err = r.stderr.decode(errors="replace")
    if r.returncode in SAN_STATUS or "Sanitizer" in err or "runtime error:" in err:
        return SAN_STATUS.get(r.returncode, "sanitizer"), err
    if r.returncode < 0:
        return f"signal {-r.returncode}", err
    if r.returncode == 0:
        return "ok", err
    if r.returncode < 134:
        return f"errno {r.returncode}", err
    return f"status {r.returncode}", err


def is_finding(outcome: str) -> bool:
    return not (outcome == "ok" or outcome.startswith("errno "))


def run_corpus(runner: Path, n_requests: int, n_objects: int, seed: int = 0, timeout: float = 60,
               findings_dir: Path | None = None, log=print) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="skyhook-san-") as tmp:
        tmp = Path(tmp)
        parts = malformed.partitions(tmp / "parts")
        valid = malformed.valid_requests()
        jobs = []   # (what, request bytes, object path)
        for i, req in enumerate(malformed.malformed_requests(n_requests, seed)):
            jobs.append((f"request {i}", req, parts[i % len(parts)]))
        for i in range(n_objects):
            src = parts[i % len(parts)]
            kind = malformed.CORRUPTIONS[i % len(malformed.CORRUPTIONS)]
            bad = tmp / f"bad{i}{src.suffix}"
            bad.write_bytes(malformed.corrupted(src.read_bytes(), rng, kind))
            jobs.append((f"object {i} ({kind} of {src.name})", valid[rng.randrange(len(valid))], bad))
        outcomes = collections.Counter()
        findings = []
        t0 = time.monotonic()
        for k, (what, req, obj) in enumerate(jobs):
            rp = tmp / "req.bin"
            rp.write_bytes(req)
            outcome, err = run_one(runner, rp, obj, tmp / "out.bin", timeout)
            outcomes[outcome] += 1
            if is_finding(outcome):
                findings.append({"input": what, "outcome": outcome, "stderr": err[-4000:]})
                if findings_dir is not None:
                    findings_dir.mkdir(parents=True, exist_ok=True)
                    stem = findings_dir / f"finding{len(findings)}"
                    stem.with_suffix(".request").write_bytes(req)
                    stem.with_suffix(".object").write_bytes(obj.read_bytes())
                    stem.with_suffix(".txt").write_text(f"{what}: {outcome}\n{err}")
            if (k + 1) % 200 == 0:
                log(f"  {k + 1}/{len(jobs)} runs, {len(findings)} findings, {time.monotonic() - t0:.0f} s")
        if findings_dir is not None:   # the inputs that found nothing are not kept
            pass
    return {"runs": len(jobs), "malformed_requests": n_requests, "corrupted_objects": n_objects,
            "seconds": round(time.monotonic() - t0, 1), "outcomes": dict(outcomes.most_common()),
            "findings": findings}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", type=Path, default=malformed.ROOT / "build-asan" / "bin" / "skyhook_scan_local")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--out", type=Path, default=None, help="folder for the inputs of findings")
    args = p.parse_args(argv)
    if not args.runner.exists():
        print(f"no {args.runner}: run `make sanitize` (scripts/setup.sh sanitize) first", file=sys.stderr)
        return 2
    summary = run_corpus(args.runner, args.requests, args.objects, args.seed, args.timeout,
                         args.out or args.runner.parent.parent / "findings",
                         log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(summary, indent=1))
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
