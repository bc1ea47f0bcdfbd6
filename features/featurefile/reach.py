"""What an HDF5 file someone handed over may reach: only its own bytes.

HDF5 can make a dataset read from elsewhere: a soft or external link to another
file's object, "external" storage in raw files anywhere on disk (``/etc/shadow`` as
features), or a virtual dataset over other files. ``check_self_contained`` walks
every link of a file and refuses all of these, except virtual datasets that the
caller's ``allow_virtual`` accepts (the Ray engine's shard files, checked there).
"""

from __future__ import annotations

from collections.abc import Callable

import h5py


class H5Refused(Exception):
    """The file reaches outside itself; ``str(exc)`` says how (a phrase: 'holds ...')."""


def check_self_contained(
    group: h5py.Group,
    allow_virtual: Callable[[str, h5py.Dataset], None] | None = None,
    prefix: str = "",
    seen: set | None = None,
) -> None:
    """Raise H5Refused for any non-hard link, external storage or unaccepted virtual dataset.

    ``allow_virtual(name, dataset)`` returns to accept a virtual dataset and raises
    H5Refused to refuse it; without it every virtual dataset is refused. Each object is
    checked once, however many hard links reach it (a lattice of links would otherwise take
    time doubling with each level).
    """
    seen = set() if seen is None else seen
    for name in group:
        path = f"{prefix}/{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            raise H5Refused(f"holds a soft link {path} -> {link.path}")
        if isinstance(link, h5py.ExternalLink):
            raise H5Refused(f"holds an external link {path} -> {link.filename}:{link.path}")
        obj = group[name]
        if obj.id in seen:
            continue
        seen.add(obj.id)
        if isinstance(obj, h5py.Group):
            check_self_contained(obj, allow_virtual, path, seen)
        elif isinstance(obj, h5py.Dataset):
            if obj.external:
                raise H5Refused(
                    f"holds a dataset {path} stored in external raw files "
                    f"({', '.join(str(e[0]) for e in obj.external)})"
                )
            if obj.is_virtual:
                if allow_virtual is None:
                    raise H5Refused(f"holds a virtual dataset {path} reading other files")
                allow_virtual(path, obj)
