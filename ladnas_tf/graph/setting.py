"""The evaluation network a genotype is built into for timing and counting (the paper: CIFAR 20 cells
C=36; ImageNet 14 cells C=48), named by a key that tables and predictors record."""
import dataclasses
import re

from ladnas_tf.bad_input import BadInput


class SettingError(BadInput):
    """A setting key that names no evaluation network."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """The evaluation network being timed (the paper: CIFAR 20 cells C=36; ImageNet 14 cells C=48)."""
    setting: str = 'cifar'
    channels: int = 36
    num_cells: int = 20
    image_size: int = 32
    batch_size: int = 1
    num_classes: int = 10

    @property
    def key(self):
        return (f'{self.setting}-C{self.channels}-N{self.num_cells}-{self.image_size}px'
                f'-b{self.batch_size}-k{self.num_classes}')

    def network_kwargs(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_key(cls, key):
        """The inverse of `key` (an LPM's metadata names its setting by key)."""
        match = re.fullmatch(r'(\w+)-C(\d+)-N(\d+)-(\d+)px-b(\d+)-k(\d+)', str(key))
        if not match:
            raise SettingError(f'setting key {key!r} is not of the form cifar-C36-N20-32px-b1-k10')
        name, *numbers = match.groups()
        return cls(name, *(int(n) for n in numbers))
