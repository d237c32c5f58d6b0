"""The paper's test accuracies (REFERENCE 8) and the REFERENCE 7 rows behind each preset.

Keys are ``dataset -> variant`` with variants as in the preset names
(``<group>-<partial|full|augerino|mlp|t2head>``, ``t2``); values ``{N: accuracy %}`` resp.
the row number.
"""

__all__ = ["CK_PAPER", "CK_ROWS", "GCNN_PAPER", "GCNN_ROWS"]

# CKResNet, Tables 2-4.
CK_PAPER = {
    "rotmnist": {
        "t2": {1: 97.23},
        "se2-partial": {4: 99.13, 8: 99.23, 16: 99.18},
        "se2-full": {4: 99.10, 8: 99.17, 16: 99.24},
        "e2-partial": {8: 97.78, 16: 98.58},
        "e2-full": {8: 98.14, 16: 98.35},
        "se2-augerino": {8: 99.17, 16: 99.25},
        "e2-augerino": {8: 99.12, 16: 99.18},
        "se2-mlp": {16: 99.00},
        "e2-mlp": {16: 99.02},
        "se2-t2head": {16: 99.04},
        "e2-t2head": {16: 97.98},
    },
    "cifar10": {
        "t2": {1: 83.11},
        "se2-partial": {4: 86.15, 8: 88.59, 16: 89.11},
        "se2-full": {4: 83.73, 8: 86.08, 16: 86.59},
        "e2-partial": {8: 89.00, 16: 90.12},
        "e2-full": {8: 85.55, 16: 88.95},
        "se2-augerino": {8: 82.38, 16: 82.53},
        "e2-augerino": {8: 84.29, 16: 83.54},
        "se2-mlp": {16: 86.25},
        "e2-mlp": {16: 87.43},
        "se2-t2head": {16: 82.76},
        "e2-t2head": {16: 86.68},
    },
    "cifar100": {
        "t2": {1: 47.99},
        "se2-partial": {4: 53.91, 8: 57.26, 16: 57.31},
        "se2-full": {4: 52.35, 8: 55.55, 16: 51.55},
        "e2-partial": {8: 55.22, 16: 61.46},
        "e2-full": {8: 54.29, 16: 57.78},
        "se2-augerino": {8: 52.98, 16: 51.47},
        "e2-augerino": {8: 52.59, 16: 54.76},
        "se2-mlp": {16: 56.29},
        "e2-mlp": {16: 58.87},
        "se2-t2head": {16: 52.51},
        "e2-t2head": {16: 57.61},
    },
}
# REFERENCE 7 rows per (dataset, variant); variants without a row are derived.
CK_ROWS = {
    "rotmnist": {"t2": 5, "se2-partial": 6, "se2-full": 7, "se2-augerino": 8, "e2-partial": 9,
                 "e2-full": 10, "e2-augerino": 11},
    "cifar10": {"t2": 16, "se2-partial": 17, "se2-full": 18, "se2-mlp": 18, "se2-augerino": 19,
                "e2-partial": 20, "e2-full": 21, "e2-mlp": 21, "e2-augerino": 22},
    "cifar100": {"t2": 27, "se2-partial": 28, "se2-full": 29, "se2-augerino": 30,
                 "e2-partial": 31, "e2-full": 32, "e2-t2head": 32, "e2-augerino": 33},
}  # fmt: skip


# 13-layer GCNN, Table 5 (rows as assigned in REFERENCE 8).
GCNN_PAPER = {
    "rotmnist": {"t2": {1: 96.90}, "se2-full": {2: 98.70, 4: 98.43, 8: 98.54},
                 "se2-augerino": {2: 98.94, 4: 98.94, 8: 99.28},
                 "se2-partial": {2: 98.72, 4: 98.78, 8: 98.77}},
    "cifar10": {"t2": {1: 91.21}, "se2-full": {2: 85.51, 4: 89.73, 8: 90.55},
                "se2-augerino": {2: 87.78, 4: 91.66, 8: 89.96},
                "se2-partial": {2: 92.48, 4: 92.28, 8: 91.99}},
    "cifar100": {"t2": {1: 67.14}, "se2-full": {2: 62.06, 4: 65.97, 8: 67.70},
                 "se2-augerino": {2: 65.79, 4: 68.99, 8: 69.66},
                 "se2-partial": {2: 66.72, 4: 69.83, 8: 70.80}},
}  # fmt: skip
GCNN_ROWS = {
    "rotmnist": {"t2": 12, "se2-partial": 13, "se2-full": 14, "se2-augerino": 15},
    "cifar10": {"t2": 23, "se2-partial": 24, "se2-full": 25, "se2-augerino": 26},
    "cifar100": {"t2": 34, "se2-partial": 35, "se2-full": 36, "se2-augerino": 37},
}


def paper_numbers(numbers: dict[int, float], table: str) -> str:
    """The paper's accuracies of a preset by ``N`` (``"N=8: 98.64 (Table 2)"``), or
    ``"- (not in the paper)"``."""
    if not numbers:
        return "- (not in the paper)"
    return ", ".join(f"N={n}: {acc:.2f}" for n, acc in sorted(numbers.items())) + f" ({table})"
