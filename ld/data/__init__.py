"""Data: sources (D4RL HDF5, Minari, built-in generators) -> `EpisodeDataset` -> windows + normalizers.

Heavy submodules (h5py, minari, the built-in generators) are imported lazily by the functions below.
"""

from ld.data.types import DataError, DatasetInfo, Episode, EpisodeDataset

__all__ = [
    "DataError", "DatasetInfo", "Episode", "EpisodeDataset",
    "load_dataset", "data_dir",
    "read_d4rl_hdf5", "write_d4rl_hdf5",
    "reward_to_go", "make_windows", "Windows", "WindowIndex", "initial_states",
    "Normalizer", "DatasetNormalizer",
]


def __getattr__(name):  # PEP 562: lazy re-exports
    if name in ("load_dataset", "data_dir"):
        from ld.data import sources
        return getattr(sources, name)
    if name in ("read_d4rl_hdf5", "write_d4rl_hdf5"):
        from ld.data import hdf5
        return getattr(hdf5, name)
    if name in ("reward_to_go", "make_windows", "Windows", "WindowIndex", "initial_states"):
        from ld.data import windows
        return getattr(windows, name)
    if name in ("Normalizer", "DatasetNormalizer"):
        from ld.data import normalizer
        return getattr(normalizer, name)
    raise AttributeError(f"module 'ld.data' has no attribute {name!r}")
