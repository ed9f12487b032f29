"""A spec's check suite as an Inspect AI task (``pip install "behavio[inspect]"``).

``inspect eval behavio/spec --model PROVIDER/MODEL -T spec=specs/x.yaml`` compiles the spec in
memory, asks the model every check case (greedy, the spec's token budget) and scores each answer
with behavio's rules: one Inspect scorer per behavior, its value the rules' verdicts on the case
and its explanation theirs. The task is registered through the ``inspect_ai`` entry point.
"""
