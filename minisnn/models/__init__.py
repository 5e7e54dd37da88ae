"""Spiking networks: the paper's ResNet-19, deeper ResNets (and the paper's ImageNet ResNet-34), CPU-sized
variants, a plain deep net."""
from .plain import PlainSpikingNet
from .resnet import SpikingResNet, resnet19, resnet34, resnet34_imagenet, resnet50, resnet_small

MODELS = {
    "resnet19": resnet19,
    "resnet34": resnet34,
    "resnet34_imagenet": resnet34_imagenet,
    "resnet50": resnet50,
    "resnet_small": resnet_small,
    "plain": PlainSpikingNet,
}


def build_model(name, **kwargs):
    """Build a model by name with keyword arguments (the same dict a checkpoint stores)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
