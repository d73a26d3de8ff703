"""One rank of the data-parallel tests (parity_tests/test_distributed.py): trains a Trainer from
the JSON config in argv[1] and writes RESULT_DIR/rank{R}.npz (losses, grad norms, the final
parameters and this rank's AdamW moments). Run under pyllmc.launch or torchrun.

Test hooks (environment): PYLLMC_TEST_KILL_AT="step:rank" SIGKILLs that rank after that step
(only on the first attempt under torchrun, so a restart can succeed); PYLLMC_TEST_STOP_AT=
"step:rank" makes a step_end callback of that rank alone ask for a stop;
PYLLMC_TEST_PLAIN_DP_UPDATE sets pyllmc.distributed.PLAIN_DP_UPDATE ("split" or "all_reduce")."""

import json
import os
import signal
import sys

import numpy as np

from pyllmc import GPTConfig, Trainer, TrainerConfig, distributed
from pyllmc.distributed import restart_count


def main() -> int:
    spec = json.loads(sys.argv[1])
    if os.environ.get("PYLLMC_TEST_PLAIN_DP_UPDATE"):
        distributed.PLAIN_DP_UPDATE = os.environ["PYLLMC_TEST_PLAIN_DP_UPDATE"]
    result_dir = spec.pop("result_dir")
    if isinstance(spec.get("model"), dict):
        spec["model"] = GPTConfig(**spec["model"])
    cfg = TrainerConfig(**spec)
    trainer = Trainer(cfg)
    kill = os.environ.get("PYLLMC_TEST_KILL_AT")
    if kill and restart_count() == 0:
        step, rank = (int(x) for x in kill.split(":"))

        def maybe_die(status):
            if status.step == step and int(os.environ["RANK"]) == rank:
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.add_callback("step_end", maybe_die)
    stop = os.environ.get("PYLLMC_TEST_STOP_AT")
    if stop:  # a callback asks for a stop on one rank only
        step_s, rank_s = (int(x) for x in stop.split(":"))
        trainer.add_callback("step_end", lambda st: st.step == step_s and int(os.environ["RANK"]) == rank_s)
    with trainer:
        h = trainer.train()
        dp = trainer._dp
        rank = dp.rank if dp is not None else 0
        if dp is not None and dp.opt.zero:
            m, v = dp.adam_m, dp.adam_v
        else:
            m, v = trainer.model.flat("adam_m"), trainer.model.flat("adam_v")
        np.savez(os.path.join(result_dir, f"rank{rank}.npz"), final_step=np.array(h.final_step),
             losses=np.array(h.losses, dtype=np.float64),
                 norms=np.array([r["grad_norm"] for r in h.rows], dtype=np.float64),
                 params=trainer.model.flat("params"), adam_m=m, adam_v=v,
                 comm_s=np.array(dp.comm_s if dp is not None else 0.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
