"""Reading and writing detector data: ROOT (uproot/awkward), HDF5 (CaloGAN, CaloChallenge, HCAL DQM), npy.

Units everywhere: cell and hit energies in MeV, incident energies in GeV (``Showers.energy``); files that
store MeV incident energies (CaloChallenge) are converted on read and write. Every writer writes a
temporary file beside the destination and renames it at the end, so a failed write leaves nothing behind.
"""

from ._errors import BadEnergyError, CorruptFileError, MissingKeyError
from .containers import Histograms, Jagged, OccupancyMaps, Showers
from .dataset import ShowersDataset, ShowersIterableDataset
from .hdf5 import (
    read_calochallenge,
    read_calogan,
    read_hcal_dqm,
    write_calochallenge,
    write_calogan,
    write_hcal_dqm,
)
from .npy import read_npy_maps, write_npy_maps
from .root import (
    iterate_showers,
    list_objects,
    read_arrays,
    read_maps,
    read_showers,
    read_th2,
    write_maps_root,
    write_results_root,
    write_showers_root,
    write_th2,
)

__all__ = [
    "BadEnergyError",
    "CorruptFileError",
    "Histograms",
    "Jagged",
    "MissingKeyError",
    "OccupancyMaps",
    "Showers",
    "ShowersDataset",
    "ShowersIterableDataset",
    "iterate_showers",
    "list_objects",
    "read_arrays",
    "read_calochallenge",
    "read_calogan",
    "read_hcal_dqm",
    "read_maps",
    "read_npy_maps",
    "read_showers",
    "read_th2",
    "write_calochallenge",
    "write_calogan",
    "write_hcal_dqm",
    "write_maps_root",
    "write_npy_maps",
    "write_results_root",
    "write_showers_root",
    "write_th2",
]
