"""Official scoring rules of published reward-model benchmarks, as pure functions of per-response rewards."""
