"""Pruning: what to remove, how much per layer, and removing it.

    ratios     layer ratios: YAML files, uniform/global allocation, rounding to multiples
    width_search  widths per filter group from cost curves under a latency budget (the planner's search)
    criteria   how important each weight or filter is: `Criterion` objects in a registry
    masks      masks from ratios and scores (unstructured, filter groups, N:M)
    sparsity   sparsity reports by the assignment's definitions
    schedule   OMP and IMP: prune, masked retraining, rounds, the run folder
    channels   removing channels and heads with Torch-Pruning, recorded as a history
    rebuild    the model a checkpoint describes: slim ones replay that history
    slim       a masked model made smaller, and proved to compute the same function
"""
