"""A sweep's seeds grouped (the project's sweeper, srn_lightning/stacking.py): the jobs of a batch
that differ only in `seed`, and the overrides by which the job of a group says which jobs it
stands for. Plain strings, nothing imported: the sweeper and the launchers that account for each
job (srn_lightning/cluster.py) read the same format.
"""

from __future__ import annotations

import re

SEED = re.compile(r"seed=(0|[1-9][0-9]*)")  # an override of the seed, as it round-trips
GROUP = "hydra.sweeper.group"  # [[job number, seed], ...]: the jobs a group's job stands for
MEMBER = re.compile(r"\[(\d+),(\d+)\]")
GROUP_DIR = ".stacked"  # in the sweep dir: each group's own dir, by the number of its first job


def seed_groups(batch) -> list[list[int]]:
    """The positions of a batch's jobs grouped by everything but their seed, in the batch's order:
    jobs whose overrides are the same but for one `seed=<n>` (at the same place)."""
    groups: dict[tuple, list[int]] = {}
    for i, overrides in enumerate(batch):
        seeds = [j for j, o in enumerate(overrides) if SEED.fullmatch(o)]
        if len(seeds) == 1:
            key = (seeds[0], *(o for j, o in enumerate(overrides) if j != seeds[0]))
        else:
            key = ("job", i)  # no seed of its own to group by
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def group_overrides(batch, group: list[int], first_num: int, dir_offset: int = 0) -> list[str]:
    """The overrides of the job that stands for `group`: its first job's, with the members (each
    one's job number and seed) and the group's own dir (named by its first job's number as the
    dirs show it: `dir_offset` added), as `hydra.*` overrides (not the job's)."""
    members = ",".join(f"[{first_num + i},{seed_of(batch[i])}]" for i in group)
    return [*batch[group[0]], f"{GROUP}=[{members}]",
            f"hydra.sweep.subdir={GROUP_DIR}/{dir_offset + first_num + group[0]}"]


def seed_of(overrides) -> int:
    return next(int(SEED.fullmatch(o).group(1)) for o in overrides if SEED.fullmatch(o))


def member_overrides(overrides, seed: int) -> list[str]:
    """A group's member's overrides: the first member's (the group's own `hydra.*` ones left out),
    with its own seed."""
    return [f"seed={seed}" if SEED.fullmatch(o) else o for o in overrides
            if not o.startswith((f"{GROUP}=", "hydra.sweep.subdir="))]


def members(overrides, num: int) -> list[tuple[int, list[str]]]:
    """The jobs a launched job stands for, (Hydra's job number, overrides): a group's members, or
    the job itself (`num`: the number its launcher gave it)."""
    group = next((o for o in overrides if o.startswith(f"{GROUP}=")), None)
    if group is None:
        return [(num, list(overrides))]
    return [(int(n), member_overrides(overrides, int(s))) for n, s in MEMBER.findall(group)]
