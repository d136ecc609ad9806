"""Model definitions and the builders of the offline models, as transformers keeps its modeling files: the frozen
EfficientNet-Lite (`efficientnet_lite`), and the tiny models built from configs (`tiny`, `tiny_blip2`,
`tiny_llava`) that run every route without the Hub."""
