"""The `--only job` measurement with the host's release of the guest thread's OpenMP
workers switched off (the behaviour before it): python job_without_release.py ARGS..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import wasm_bench  # noqa: E402
import pyllmc.wasm.calls as calls  # noqa: E402

calls.release_threads = lambda: None
sys.exit(wasm_bench.main(sys.argv[1:]))
