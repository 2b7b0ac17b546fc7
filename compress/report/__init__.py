"""The Markdown report of a run folder (or a suite), built from the files the stages wrote.

    runs       a run folder read back (`RunData`)
    markdown   tables, links, percentages
    figures    the report's figures
    sections   accuracy, confidence, rounds, layers, masks
    questions  the assignment's questions, from the template `questions.md`
    deploy     ONNX sizes, INT8, latency, imported models, plans
    tables     rich tables for the terminal (training, ratios, prune, slim, suite)
    writer     `write_report`: the sections in order, written atomically
"""
