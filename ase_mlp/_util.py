"""Small shared helpers."""

from ase.data import atomic_numbers


def check_elements(elements) -> list[str]:
    out = []
    for el in elements:
        if el not in atomic_numbers or el == "X":
            raise ValueError(f"unknown chemical element {el!r}")
        out.append(el)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate elements in {out}")
    return out
