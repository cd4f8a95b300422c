"""Scale-out: evaluation episodes and session replays run as tasks on a local process pool or on
Ray (:mod:`agent.scaleout.backends`), with the same results in the same order on either."""
