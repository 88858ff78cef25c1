"""How a model is trained: the study's protocol, or a recipe tuned per model on the validation split.

The study trains all six models alike except for the learning rate: Adam at a constant rate, plain
cross-entropy, up to 30 epochs with early stopping on the validation loss. ``Recipe`` holds those choices
per model, so that a result set can record what each of its models got (``model.json``, and the run's
recipe name in the manifest's configuration).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import keras

from core.specs import MODEL_SPECS

STUDY = "study"
TUNED = "tuned"
RECIPES = (STUDY, TUNED)


# The plateau schedule: the learning rate times PLATEAU_FACTOR after PLATEAU_PATIENCE epochs without a lower
# validation loss. It needs no horizon, so it suits runs that early stopping ends at an epoch not known before.
PLATEAU_FACTOR = 0.3
PLATEAU_PATIENCE = 2
AUGMENTATIONS = ("views", "random")
SCHEDULES = ("constant", "plateau", "cosine")


@dataclass(frozen=True)
class Recipe:
    """One model's optimizer, learning-rate schedule and loss. The epoch budget and early stopping's patience
    are the run's (``training.HyperParameters``), the same for every model of a result set."""

    learning_rate: float
    optimizer: str = "adam"  # "adam", or "adamw" (decoupled weight decay, Loshchilov & Hutter 2019)
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant", "plateau" (see PLATEAU_FACTOR), or "cosine" (see cosine_epochs)
    label_smoothing: float = 0.0
    # The cosine schedule (Loshchilov & Hutter 2017, without restarts): a linear warm-up over ``warmup_epochs``,
    # then the rate falls along a half cosine to zero at epoch ``cosine_epochs``, where the run ends (see
    # ``patience``). For the models that learn from scratch, whose validation loss is too noisy for the plateau
    # schedule, which lowers the rate long before they are done.
    cosine_epochs: int = 0
    warmup_epochs: int = 0
    # "views": each epoch draws one of the cached views of every photo (training.make_views); "random": a fresh
    # random crop, mirror and colour jitter every epoch (core/augmentation.py), for the models that read photos.
    augmentation: str = "views"
    # With "random": the side in pixels the crops are resized to for training (0: the run's image size). The
    # model is convolutional with global pooling, so it trains on smaller crops and is validated, stored and
    # tested at the image size. Training at a lower resolution than testing costs about (train/test)^2 of the
    # compute, and with random crops it loses nothing: a crop of part of a photo, shown smaller, makes objects
    # look about as large as the whole photo at the test size (Touvron et al. 2019, "FixRes").
    train_size: int = 0
    # Linear probing first (Kumar et al. 2022): for ``head_epochs`` only the classifier trains, at a constant
    # ``head_learning_rate``, on the frozen features; then the whole trained part, by the rest of the recipe.
    head_epochs: int = 0
    head_learning_rate: float = 1e-3
    # CutMix (Yun et al. 2019) on the fresh crops, with this Beta(alpha, alpha) for the pasted box's area (0: none):
    # each batch trains on images part one photo and part another, against targets mixed by area.
    cutmix: float = 0.0
    # Mixup (Zhang et al. 2018) with this Beta(alpha, alpha) for the blend's weight (0: none): each batch trains
    # on blends of two items against targets mixed by the same weights. Unlike CutMix it also mixes cached
    # trunk outputs, so the fine-tuned and attention models can use it.
    mixup: float = 0.0
    # The fine-tuned models only: the last backbone layer kept frozen, where it is not the backbone's usual cut
    # (``specs.Backbone.trunk_output``); the trunk cache of both models of the backbone ends there, and the
    # attention model computes the frozen layers above it once per view.
    frozen_through: str = ""

    def __post_init__(self):
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}: {' or '.join(AUGMENTATIONS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: {', '.join(SCHEDULES)}")
        if self.schedule == "cosine" and self.cosine_epochs <= self.warmup_epochs:
            raise ValueError("the cosine schedule needs cosine_epochs > warmup_epochs")
        if self.train_size and self.augmentation != "random":
            raise ValueError("train_size needs augmentation='random': the cached views are at the image size")
        if self.cutmix and self.augmentation != "random":
            raise ValueError("cutmix needs augmentation='random': it mixes photos, not cached trunk outputs")
        if self.cutmix and self.mixup:
            raise ValueError("cutmix or mixup, not both: each mixes the batch's targets its own way")

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        if self.optimizer == "adamw":
            return keras.optimizers.AdamW(self.learning_rate, weight_decay=self.weight_decay)
        if self.optimizer != "adam":
            raise ValueError(f"unknown optimizer {self.optimizer!r}: adam or adamw")
        return keras.optimizers.Adam(self.learning_rate)

    def callbacks(self, monitor: str) -> list[keras.callbacks.Callback]:
        if self.schedule == "plateau":
            return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE)]
        if self.schedule == "cosine":
            return [keras.callbacks.LearningRateScheduler(self.cosine_rate)]
        return []

    def epoch_budget(self, budget: int) -> int:
        """The most epochs worth running: the cosine schedule's rate is zero after ``cosine_epochs``, where
        only BatchNorm's running statistics would still move (and keep early stopping waiting)."""
        return min(budget, self.cosine_epochs) if self.schedule == "cosine" else budget

    def head_phase(self) -> Recipe:
        """The recipe of the classifier-only epochs: this one's optimizer and loss at the head's constant rate."""
        return Recipe(self.head_learning_rate, optimizer=self.optimizer, weight_decay=self.weight_decay,
                      label_smoothing=self.label_smoothing, augmentation=self.augmentation, cutmix=self.cutmix,
                      mixup=self.mixup)

    @property
    def stops_early(self) -> bool:
        """Whether early stopping may end the run. A cosine run is not stopped early: while its rate is still
        high, the validation loss of a model learning from scratch wanders for several epochs (CNN + attention's
        first two seeds stopped at epochs 41 and 28 of 60 with patience 8, their validation accuracy still
        rising), so it runs to the schedule's end and keeps its best epoch, like every run."""
        return self.schedule != "cosine"

    def patience(self, patience: int) -> int:
        """Early stopping's patience: the run's, or the whole schedule where the run is not stopped early."""
        return patience if self.stops_early else self.cosine_epochs

    def cosine_rate(self, epoch: int, _current: float | None = None) -> float:
        """The cosine schedule's rate for an epoch (counted from 0)."""
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        progress = min((epoch - self.warmup_epochs) / (self.cosine_epochs - self.warmup_epochs), 1.0)
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    def loss(self) -> keras.losses.Loss:
        if self.label_smoothing or self.cutmix or self.mixup:
            return SmoothedCrossentropy(self.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, fields: dict) -> Recipe:
        """A recipe as recorded (a ``model.json``); fields added since take their defaults, which is what
        a run made before them used."""
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One line for a person: optimizer and rate, schedule, loss, augmentation."""
        optimizer = f"AdamW {self.learning_rate:g}, weight decay {self.weight_decay:g}" if self.optimizer == "adamw" else (
            f"Adam {self.learning_rate:g}")
        schedule = {
            "constant": "constant rate",
            "plateau": f"rate x{PLATEAU_FACTOR:g} after {PLATEAU_PATIENCE} epochs without a better validation loss",
            "cosine": f"cosine decay to zero at epoch {self.cosine_epochs}"
                      + (f" after {self.warmup_epochs} warm-up epochs" if self.warmup_epochs else "")
                      + ("" if self.stops_early else ", no early stopping"),
        }[self.schedule]
        loss = f"label smoothing {self.label_smoothing:g}" if self.label_smoothing else "plain cross-entropy"
        views = "fresh random crops, mirrors and colour jitter" if self.augmentation == "random" else "the cached views"
        if self.train_size:
            views += f", trained at {self.train_size} px"
        if self.cutmix:
            views += f", CutMix (alpha {self.cutmix:g})"
        if self.mixup:
            views += f", mixup (alpha {self.mixup:g})"
        if self.frozen_through:
            views += f"; fine-tuned above {self.frozen_through}"
        head = (f"; the classifier alone first, {self.head_epochs} epochs at {self.head_learning_rate:g}"
                if self.head_epochs else "")
        return f"{optimizer}; {schedule}; {loss}; {views}{head}"


class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy against label-smoothed targets (Szegedy et al. 2016), for integer labels (which Keras'
    sparse cross-entropy does not smooth) or for target distributions (CutMix's training batches)."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(as_targets(y_true, y_pred), y_pred,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def as_targets(y_true, y_pred):
    """Integer labels as one-hot rows of ``y_pred``'s width; target distributions (one row per item) as they are.
    Which one is known when the function is traced: a model's training and validation steps are traced apart."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1:
        return keras.ops.cast(y_true, y_pred.dtype)
    return keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), keras.ops.shape(y_pred)[-1])


class TopLabelAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy against integer labels or target distributions: whether the top probability is on the label, or
    on the target's largest share (for a CutMix batch, the photo that shows most)."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(self.matches, name=name, **kwargs)

    @staticmethod
    def matches(y_true, y_pred):
        wanted = keras.ops.argmax(as_targets(y_true, y_pred), axis=-1)
        return keras.ops.cast(keras.ops.equal(wanted, keras.ops.argmax(y_pred, axis=-1)), "float32")


def as_trained(model_info: dict) -> Recipe:
    """A model's recipe as its ``model.json`` records it; a model of a set made before recipes were recorded
    trained by the study's (Adam at its learning rate, constant)."""
    return Recipe.from_json(model_info.get("recipe") or {"learning_rate": model_info["learning_rate"]})


def for_model(recipe: str, model_id: str) -> Recipe:
    """A model's recipe by the recipe's name."""
    if recipe == STUDY:
        return Recipe(MODEL_SPECS[model_id].learning_rate)
    if recipe == TUNED:
        return TUNED_RECIPES[model_id]
    raise ValueError(f"unknown recipe {recipe!r}: {', '.join(RECIPES)}")


def with_changes(chosen: dict[str, Recipe], changes: list[str]) -> dict[str, Recipe]:
    """The recipes with fields changed by ``MODEL.FIELD=VALUE`` texts (``scripts/train.py --change``), which
    is how every try of the README's recipe table can be rerun without editing this file."""
    changed = dict(chosen)
    for change in changes:
        target, _, text = change.partition("=")
        model_id, _, name = target.partition(".")
        if model_id not in changed or name not in Recipe.__dataclass_fields__ or not text:
            raise ValueError(f"cannot apply {change!r}: expected MODEL.FIELD=VALUE with MODEL one of "
                             f"{', '.join(changed)} and FIELD one of {', '.join(Recipe.__dataclass_fields__)}")
        kind = type(getattr(changed[model_id], name))
        try:
            value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            wanted = "a whole number" if kind is int else "a number"
            raise ValueError(f"cannot apply {change!r}: {name} takes {wanted}") from None
        changed[model_id] = replace(changed[model_id], **{name: value})
    return changed


# The tuned recipe's epoch budget and early-stopping patience (a run's --epochs / --patience override them):
# long enough that every model stops on its validation loss, not on the budget (README: Recipes). Patience 8,
# not 5: in the 12 early-stopped runs of artifacts/ no run went more than 4 epochs without a new minimum, but on
# another machine (2026-12-06, whose bfloat16 rounding differs) VGG16 + attention's seed 0 went 5, and patience 5
# stopped it at epoch 12 with its validation loss falling for 3 epochs (78.0 % against 79.0 % in artifacts/
# after 22 epochs): the plateau schedule cuts the rate after every 2 epochs without a new minimum, and its
# second cut had only one epoch to work. The 3 epochs saved per fine-tuned run would be about 3 minutes.
TUNED_EPOCHS = 150
TUNED_PATIENCE = 8

# Each model's own training, chosen on the validation split of the clean split (README: Recipes; one seed per
# try, so differences of a few of the 306 validation photos are weak evidence):
# - ResNet50 fine-tuned: AdamW 3e-5 82.0 % against 80.7 % at the study's 1e-4 and at 1e-5; all of conv5 fine-tuned
#   (frozen through conv4's output) instead of its last block, three seeds: a lower validation loss for each seed
#   (1.157 / 1.158 / 1.153 against 1.218 / 1.209 / 1.210) at 82.8 % against 82.1 % (means).
# - VGG16 fine-tuned: AdamW 1e-4 84.0 % against the study's 1e-5 77.1 %.
# - The attention heads: 1e-3 75.5 % (VGG16) and 84.0 % (ResNet50) against the study's 70.9 % and 81.7 %.
# - The CNNs: the study's 1e-4 and the plateau schedule both stopped learning near 40-50 %; a cosine decay from
#   2e-3 over 60 epochs reached 58.2 % on the cached views and 55.2 % on fresh random crops (which at this
#   budget underfit: 60 % training accuracy). CNN + attention, with the same decay over 100 epochs on fresh
#   random crops: 63.1 % and 65.0 % (two runs of seed 0) against 53.9 % over 60 epochs on the cached views;
#   the same with the crops at 160 px (train_size, tested at 224): 64.1 % at about half the training time.
#   The plain CNN over 100 epochs on the cached views: 61.8 %; on fresh random crops at 160 px over 150 epochs
#   (about the time of 60 epochs at 224 px): 65.7 %; the same with weight decay 0.1 instead of 0.05, over three
#   seeds: 67.4 % against 65.5 % (means) and a lower validation loss for each seed (what limits it is generalising
#   from 46 photos per class, not fitting them); weight decay 0.2, three seeds: the same accuracy (67.2 %) and
#   again a lower validation loss for each seed (1.654 against 1.698, means): chosen on the loss.
TUNED_RECIPES = {
    "cnn": Recipe(2e-3, optimizer="adamw", weight_decay=0.2, schedule="cosine", label_smoothing=0.1,
                  cosine_epochs=150, warmup_epochs=2, augmentation="random", train_size=160),
    "cnn_attention": Recipe(2e-3, optimizer="adamw", weight_decay=0.05, schedule="cosine", label_smoothing=0.1,
                            cosine_epochs=100, warmup_epochs=2, augmentation="random", train_size=160),
    "vgg16": Recipe(1e-4, optimizer="adamw", weight_decay=0.01, schedule="plateau", label_smoothing=0.1),
    "resnet50": Recipe(3e-5, optimizer="adamw", weight_decay=0.01, schedule="plateau", label_smoothing=0.1,
                       frozen_through="conv4_block6_out"),
    "vgg16_attention": Recipe(1e-3, optimizer="adamw", weight_decay=0.01, schedule="plateau", label_smoothing=0.1),
    "resnet50_attention": Recipe(1e-3, optimizer="adamw", weight_decay=0.01, schedule="plateau", label_smoothing=0.1),
}
