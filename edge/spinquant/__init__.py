"""SpinQuant for edge: rotations that make Llama weights and activations easier to quantize.

  hadamard.py   Hadamard matrices (Sylvester and Paley, so 3B's 3072 = 12 * 256 works) and seeded random ones
  rotations.py  the `Rotations` artifact (R1, per-layer R2): made, saved as safetensors, checked, loaded
  fold.py       norm fusion, untying, R1/R2 and the online R4 folded into a float model, block by block
  optimize.py   Cayley SGD on the Stiefel manifold with 8-bit fake-quantized activations (rotation.kind: optimized)

The export pipeline uses them through `edge.export.rotation_stage` and `edge.quant.ptq.quantize_model`;
GPTQ lives in `edge.quant.gptq`, Meta's pre-quantized SpinQuant checkpoints in `edge.checkpoint.prequantized`.
"""
