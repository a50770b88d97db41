"""The pictures saved beside the model card: learning curves and the digit confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from training.atomic import atomic_write


def save_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    """history: one dict per epoch with train_loss and the validation scores (val_*)."""
    epochs = [int(h["epoch"]) for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    for key, label in [
        ("val_digit_accuracy", "MNIST digit"),
        ("val_sum_accuracy", "MNIST sum (x10 numbers)"),
        ("val_glyph_digit_accuracy", "synthetic digits"),
        ("val_glyph_negatives_refused", "non-digits refused"),
    ]:
        if all(key in h for h in history):  # a final fit has no MNIST validation slice
            ax_acc.plot(epochs, [100 * h[key] for h in history], marker="o", label=label)
    ax_acc.set(
        xlabel="epoch", ylabel="% on the validation slice", title="Validation", ylim=(90, 100)
    )
    ax_acc.legend(loc="lower right")
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_confusion_matrix(confusion: list[list[int]], path: Path) -> None:
    """confusion[true][predicted] counts; the diagonal is dimmed so the errors stand out."""
    fig, ax = plt.subplots(figsize=(6, 5.4))
    off_diag = [[0 if i == j else c for j, c in enumerate(row)] for i, row in enumerate(confusion)]
    image = ax.imshow(off_diag, cmap="Reds")
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="grey" if i == j else "black",
                )
    ax.set(
        xticks=range(10),
        yticks=range(10),
        xlabel="predicted digit",
        ylabel="true digit",
        title="Digit confusion on MNIST test (errors in red)",
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
