"""Analyses of a trained model: where pruning breaks, which layers can take it, and what it buys.

    evaluate     fast evaluation of many variants, BatchNorm re-estimation, layer blocks
    mask_grid    masks at every sparsity of a sweep from scores computed once
    sweep        one-shot accuracy over a sparsity grid; the trade-off point
    sensitivity  each layer pruned alone; a proposed ratio file
    goals        --speedup / --latency-ms, parsed
    latency_table  per-group latency on the target runtime, measured once and cached
    plan_costs   what narrowing each filter group costs (scores or measured loss)
    planner      widths that reach a latency measured on the target runtime
    comparisons  paired statistics between models (McNemar, bootstrap over seeds)
"""
