"""`edge.quant`: Meta's mobile quantization scheme, applied after training or during it.

Layer: imports `edge.core`, `edge.config`, `edge.model`, `edge.checkpoint` and `edge.spinquant`.

    scheme.py       the scheme table (layer kind -> torchao config), read by PTQ, QAT and the manifest
    ptq.py          post-training quantization with torchao (round-to-nearest, or GPTQ's integers)
    gptq.py         GPTQ (and GPTAQ float targets), block by block
    qat.py          fake quantizers for QAT, derived from the same scheme table
    calibration.py  calibration text -> token windows
"""
