"""``behavio export``: a trained checkpoint as a standalone model others can load.

- :mod:`.merged`: the LoRA adapter merged into the base weights (in fp32), saved as safetensors in
  bf16/fp16/fp32 with the tokenizer, chat template and stop tokens.
- :mod:`.card`: the model card (README.md): the spec, the checkpoint's scorecard and the plot.
- :mod:`.to_gguf`: the same weights as one GGUF file (llama and qwen2 architectures), checked by
  loading it back with transformers and comparing logits.
"""

from behavio.export.merged import Export, export_run

__all__ = ["Export", "export_run"]
