"""Print the README's model table: parameters and FLOPs measured on our modules, next to the paper's.

Usage: python benchmarks/model_table.py
"""

import torch

from efficientdet import EfficientDet, get_config, list_models
from efficientdet.profile import count_flops, count_parameters

# Paper / official README: (params in millions, FLOPs in billions) at native resolution.
PAPER = {
    "efficientdet-d0": (3.9, 2.54), "efficientdet-d1": (6.6, 6.10), "efficientdet-d2": (8.1, 11.0),
    "efficientdet-d3": (12.0, 24.9), "efficientdet-d4": (20.7, 55.2), "efficientdet-d5": (33.7, 135.4),
    "efficientdet-d6": (51.9, 225.6), "efficientdet-d7": (51.9, 325.0), "efficientdet-d7x": (77.0, 410.0),
}


def main() -> None:
    print("| model | input | params (ours) | params (paper) | FLOPs (ours) | FLOPs (paper) | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in list_models():
        cfg = get_config(name)
        with torch.device("meta"):
            params = count_parameters(EfficientDet(cfg))
        flops = count_flops(cfg) / 1e9
        p_params, p_flops = PAPER.get(name, (None, None))
        ratio = f"{flops / p_flops:.3f}" if p_flops else ""
        print(f"| {name} | {cfg.image_size[0]} | {params:,} | {f'{p_params}M' if p_params else ''} | "
              f"{flops:.2f}B | {f'{p_flops}B' if p_flops else ''} | {ratio} |")


if __name__ == "__main__":
    main()
