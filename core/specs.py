"""What the six models of the study are: ids, titles, learning rates, backbones and the study's figures.

Plain data, importable without TensorFlow, so the dashboard can describe models it does not load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MODEL_IDS = ("cnn", "cnn_attention", "vgg16", "resnet50", "vgg16_attention", "resnet50_attention")


@dataclass(frozen=True)
class Backbone:
    """An ImageNet backbone from ``keras.applications`` and where the models cut it."""

    name: str
    title: str
    weights_file: str
    trunk_output: str  # last frozen layer shared by both models of this backbone, the cache boundary, unless
    # a recipe fine-tunes deeper (``ModelSpec.frozen_through``)
    last_conv: str  # last convolutional feature map: the heads read it, Grad-CAM explains it
    preprocessing: str


BACKBONES = {
    # VGG16: block5 (3 convs) fine-tunes, blocks 1-4 are the cached trunk.
    "vgg16": Backbone("vgg16", "VGG16", "vgg16_notop.weights.h5", "block4_pool", "block5_conv3", "caffe"),
    # ResNet50: its last residual block fine-tunes, everything below is the cached trunk.
    "resnet50": Backbone(
        "resnet50", "ResNet50", "resnet50_notop.weights.h5", "conv5_block2_out", "conv5_block3_out", "caffe"
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study, with the study's learning rate and reported test figures."""

    id: str
    title: str
    learning_rate: float
    backbone: str | None
    attention: bool
    reference_accuracy: float
    reference_loss: float
    # The last frozen backbone layer where a recipe fine-tunes deeper than the backbone's usual cut
    # (``Recipe.frozen_through``; "" for the usual ``Backbone.trunk_output``). A result set records it per model.
    frozen_through: str = ""

    @property
    def finetuned(self) -> bool:
        return self.backbone is not None and not self.attention

    @property
    def trunk_output(self) -> str | None:
        """The layer the frozen trunk ends at: the cache boundary, where the trained part begins."""
        if not self.backbone:
            return None
        return self.frozen_through or BACKBONES[self.backbone].trunk_output

    def cut_at(self, layer: str | None) -> ModelSpec:
        """This model with its trunk ending at ``layer`` (None, "" or the backbone's usual cut: as defined)."""
        if layer and not self.backbone:
            raise ValueError(f"{self.id} has no backbone to cut at {layer}")
        usual = BACKBONES[self.backbone].trunk_output if self.backbone else None
        return replace(self, frozen_through="" if layer in (None, "", usual) else layer)

    @property
    def last_conv(self) -> str:
        return BACKBONES[self.backbone].last_conv if self.backbone else "last_conv"

    @property
    def preprocessing(self) -> str:
        return BACKBONES[self.backbone].preprocessing if self.backbone else "rescale-1/255"


MODEL_SPECS = {
    s.id: s
    for s in (
        ModelSpec("cnn", "CNN", 1e-4, None, False, 0.9582, 0.2348),
        ModelSpec("cnn_attention", "CNN + attention", 1e-4, None, True, 0.9471, 0.2671),
        ModelSpec("vgg16", "VGG16 (fine-tuned)", 1e-5, "vgg16", False, 0.9582, 0.1388),
        ModelSpec("resnet50", "ResNet50 (fine-tuned)", 1e-4, "resnet50", False, 0.9749, 0.0924),
        ModelSpec("vgg16_attention", "VGG16 + attention", 1e-5, "vgg16", True, 0.9666, 0.1396),
        ModelSpec("resnet50_attention", "ResNet50 + attention", 1e-4, "resnet50", True, 0.9694, 0.1261),
    )
}
