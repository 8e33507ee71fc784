"""Cutting a model into ordered layer groups, from the input (stem) to the output (head), for tlkit.freeze.

First the head is set apart: a transformers model's head is everything outside its pretrained base model (DistilBERT's
`pre_classifier`, DeBERTa's `pooler`, wav2vec2's `projector` are new too); a torchvision classifier keeps its
pretrained hidden layers out of the head (VGG, MobileNet); otherwise it is the child named like a head (`fc`,
`classifier`...), else what follows the stack of blocks, else the last layer. Then the rest is walked in order: a
list of repeated blocks gives one group per block (or per stage), a flat run of layers is cut at its pooling layers.
Known families fix their order (DeBERTa's relative-position table is read by every layer, so it comes first).
A model's own `layer_groups()` method overrides all of this. Taught in lessons 02 and 03.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

HEAD_NAMES = frozenset({"head", "heads", "classifier", "fc", "score", "proj_out", "lm_head"})
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
# Children registered after the block list but used before (or by) every block: {encoder class: child names}.
FRONT_OF_BLOCKS = {"DebertaV2Encoder": ("rel_embeddings", "LayerNorm"), "DebertaEncoder": ("rel_embeddings", "LayerNorm")}
WITH_FIRST_BLOCK = {"DebertaV2Encoder": ("conv",)}  # DeBERTa-v2's convolution runs right after layer 0

Part = tuple[str, list[nn.Module], list[nn.Parameter]]


@dataclass
class LayerGroup:
    """One group of layers: a readable name, its modules, and its parameters (each parameter in one group only)."""

    name: str
    modules: list[nn.Module] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters in the group."""
        return sum(p.numel() for p in self.params)

    @property
    def num_trainable(self) -> int:
        """Number of scalar parameters in the group that will receive gradients."""
        return sum(p.numel() for p in self.params if p.requires_grad)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_block_list(module: nn.Module) -> bool:
    """A ModuleList/Sequential/ModuleDict of repeated blocks (a stage list such as `blocks`, `layers`), not a (conv, bn) pair.

    Repeated means: at least two parameterised children of the most common type, making up half or more of them;
    or (DenseNet's `features`) at least two multi-layer children of one type, multi-layer children being half or more.
    A run of Linear layers alone is an MLP, not a block list.
    """
    if not isinstance(module, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
        return False
    children = [m for m in module.children() if _has_params(m)]
    types = [type(m) for m in children]
    if types and all(t is nn.Linear for t in types):
        return False
    most_common = max((types.count(t) for t in set(types)), default=0)
    if most_common >= 2 and 2 * most_common >= len(types):
        return True
    composite = [type(m) for m in children if list(m.children())]
    return max((composite.count(t) for t in set(composite)), default=0) >= 2 and 2 * len(composite) >= len(types)


def _contains_block_list(module: nn.Module) -> bool:
    return any(_is_block_list(m) for m in module.modules() if m is not module)


def _is_flat(module: nn.Module) -> bool:
    """True when every parameterised child is a single layer (VGG's `features`), not a block of layers."""
    return all(not list(c.children()) for c in module.children() if _has_params(c))


def _is_flat_list(children: list[tuple[str, nn.Module]]) -> bool:
    return all(not list(c.children()) for _, c in children if _has_params(c))


def _flat_stages(children: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Cut a flat run of layers into stages: after each pooling layer, or at each weight layer when none pools.

    A normalisation layer stays with the layer before it (conv, BatchNorm, ReLU is one stage).
    """
    pools = any(isinstance(c, POOLS) for _, c in children)
    stages: list[list[tuple[str, nn.Module]]] = [[]]
    for name, child in children:
        stage = stages[-1]
        has_weights = any(_has_params(c) for _, c in stage)
        if pools:
            new = bool(stage) and isinstance(stage[-1][1], POOLS)
        else:
            new = has_weights and _has_params(child) and not isinstance(child, NORMS)
        if new:
            stages.append([])
        stages[-1].append((name, child))
    return [s for s in stages if s]


def _stage_part(stage: list[tuple[str, nn.Module]], prefix: str) -> Part:
    names = [prefix + n for n, c in stage if _has_params(c)] or [prefix + stage[0][0]]
    mods = [c for _, c in stage]
    return "+".join(names), mods, [p for m in mods for p in m.parameters()]


def _reorder(module: nn.Module, children: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Move children that every block reads (embedding tables after the block list) in front of the block list."""
    first_block = next((i for i, (_, c) in enumerate(children) if _is_block_list(c)), None)
    if first_block is None:
        return children
    front = set(FRONT_OF_BLOCKS.get(type(module).__name__, ()))
    move = [(n, c) for i, (n, c) in enumerate(children) if i > first_block and (n in front or isinstance(c, nn.Embedding))]
    if not move:
        return children
    moved = {n for n, _ in move}
    rest = [(n, c) for n, c in children if n not in moved]
    at = next(i for i, (_, c) in enumerate(rest) if _is_block_list(c))
    return rest[:at] + move + rest[at:]


def _walk(children: list[tuple[str, nn.Module]], direct: dict[str, nn.Parameter], prefix: str, owner: nn.Module) -> list[Part]:
    """Walk the children in order: expand the block list, recurse into modules that hold one, merge the rest."""
    children = _reorder(owner, children)
    with_first = [n for n in WITH_FIRST_BLOCK.get(type(owner).__name__, ()) if isinstance(getattr(owner, n, None), nn.Module)]
    n_block_lists = sum(_is_block_list(c) for _, c in children)
    out: list[Part] = []
    pending_names: list[str] = [prefix + n for n in direct]
    pending_modules: list[nn.Module] = []
    pending_params = list(direct.values())

    def flush() -> None:
        params = pending_params + [p for m in pending_modules for p in m.parameters()]
        if params:  # modules without parameters (a pooling layer, BatchNorm(affine=False)) wait for the next group
            out.append(("+".join(pending_names) or prefix.rstrip(".") or "params", list(pending_modules), params))
            pending_names.clear(), pending_modules.clear(), pending_params.clear()

    def add_blocks(parts: list[Part]) -> None:
        if pending_modules and not pending_params and not any(_has_params(m) for m in pending_modules) and parts:
            name, mods, params = parts[0]  # parameter-free modules before the blocks join the first block
            parts[0] = (name, pending_modules[:] + mods, params)
            pending_names.clear(), pending_modules.clear()
        out.extend(parts)

    for name, child in children:
        full = prefix + name
        if name in with_first:
            continue
        if n_block_lists == 1 and _is_block_list(child):  # the one stage list: one group per block (or per flat stage)
            flush()
            parts = _flat_stages(list(child.named_children())) if _is_flat(child) else None
            parts = [_stage_part(s, full + ".") for s in parts] if parts is not None else _blocks(list(child.named_children()), full + ".")
            if with_first and parts:  # e.g. DeBERTa-v2's convolution joins layer 0
                name0, mods0, params0 = parts[0]
                extra = [getattr(owner, n) for n in with_first]
                parts[0] = (name0, mods0 + extra, params0 + [p for m in extra for p in m.parameters()])
            add_blocks(parts)
        elif _is_block_list(child):  # one of several sibling stages (ResNet layer1..layer4): one group per stage
            flush()
            add_blocks([(full, [child], list(child.parameters()))])
        elif _contains_block_list(child):
            flush()
            add_blocks(_walk(list(child.named_children()), _direct(child), full + ".", child))
        elif name in HEAD_NAMES:
            flush()
            pending_names.append(full), pending_modules.append(child)
            flush()
        else:
            pending_names.append(full), pending_modules.append(child)
    flush()
    if pending_modules and out:  # trailing modules without parameters belong to the last group
        name, mods, params = out[-1]
        out[-1] = (name, mods + pending_modules, params)
    return out


def _blocks(children: list[tuple[str, nn.Module]], prefix: str) -> list[Part]:
    """One part per multi-layer block; single layers between blocks (DenseNet's conv0, norm0) are merged."""
    parts: list[Part] = []
    run: list[tuple[str, nn.Module]] = []
    for name, child in children:
        if list(child.children()) and _has_params(child):
            if any(_has_params(c) for _, c in run):
                parts.append(_stage_part(run, prefix))
                run = []
            mods = [c for _, c in run] + [child]
            parts.append((prefix + name, mods, list(child.parameters())))
            run = []
        else:
            run.append((name, child))
    if any(_has_params(c) for _, c in run):
        parts.append(_stage_part(run, prefix))
    elif run and parts:
        name, mods, params = parts[-1]
        parts[-1] = (name, mods + [c for _, c in run], params)
    return parts


def _direct(module: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters held by the module itself, not by a child (a ViT's class token, a weighted layer sum)."""
    return {n: p for n, p in module._parameters.items() if p is not None}


def _is_transformers_model(module: nn.Module) -> bool:
    return hasattr(module, "base_model_prefix") and hasattr(module, "config")


def _head_start(model: nn.Module, children: list[tuple[str, nn.Module]]) -> int:
    """Index of the first child of the head: see the module docstring for the rules, tried in that order."""
    with_params = [i for i, (_, c) in enumerate(children) if _has_params(c)]
    if not with_params:
        return len(children)
    if _is_transformers_model(model):  # everything outside the pretrained base model(s) is a new head
        base = getattr(model, str(model.base_model_prefix), None)
        backbone = [i for i, (_, c) in enumerate(children) if c is base or _is_transformers_model(c)]
        if backbone and backbone[-1] < with_params[-1]:
            return backbone[-1] + 1
    named = [i for i in with_params if children[i][0] in HEAD_NAMES]
    if named:
        return named[-1]
    trunk = [i for i, (_, c) in enumerate(children) if _is_block_list(c) or _contains_block_list(c)]
    after = [i for i in with_params if trunk and i > trunk[-1]]
    return after[0] if after else with_params[-1]


def _split_torchvision_head(model: nn.Module, head: list[tuple[str, nn.Module]]) -> tuple[list[Part], list[tuple[str, nn.Module]]]:
    """torchvision classifiers (VGG, MobileNet, ConvNeXt): only the last layer is new, the hidden ones are pretrained."""
    if not type(model).__module__.startswith("torchvision.models") or len(head) != 1 or not isinstance(head[0][1], nn.Sequential):
        return [], head
    name, seq = head[0]
    layers = list(seq.named_children())
    last = max(i for i, (_, c) in enumerate(layers) if _has_params(c)) if _has_params(seq) else 0
    pre = [(n, c) for n, c in layers[:last]]
    if not any(_has_params(c) for _, c in pre):
        return [], head
    names = [f"{name}.{n}" for n, c in pre if _has_params(c)]
    part = ("+".join(names), [c for _, c in pre], [p for _, c in pre for p in c.parameters()])
    return [part], [(f"{name}.{n}", c) for n, c in layers[last:]]


def split_model(model: nn.Module) -> tuple[list[LayerGroup], str | None]:
    """(ordered layer groups, why freezing by group is coarse for this model, or None when it is not)."""
    custom = getattr(model, "layer_groups", None)
    if callable(custom):  # a list of modules, or of (name, module) pairs
        named = [(str(i), g) if isinstance(g, nn.Module) else (str(g[0]), g[1]) for i, g in enumerate(custom())]
        parts: list[Part] = [(name, [mod], list(mod.parameters())) for name, mod in named]
        has_blocks = True
    else:
        inner = model.get_base_model() if hasattr(model, "peft_config") and hasattr(model, "get_base_model") else model
        parts, has_blocks = _default_parts(inner)
        if inner is not model:  # a peft model: the wrapped model's groups, named as the peft model names them
            path = next(n for n, m in model.named_modules() if m is inner) + "."
            parts = [(path + "+".join(name.split("+")).replace("+", "+" + path), mods, params) for name, mods, params in parts]
    groups = _assign(parts)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no parameters to group; pass a model with at least one layer.")
    reason = None
    if len(groups) < 3:
        reason = f"it splits into only {len(groups)} layer group(s) ({', '.join(g.name for g in groups)})"
    elif not has_blocks:
        reason = "tlkit found no list of repeated blocks in it (ALBERT, for one, shares a single layer across its depth)"
    return groups, reason


def _default_parts(model: nn.Module) -> tuple[list[Part], bool]:
    """Body parts from the walk (a flat split when the walk finds no structure), then the head; and whether blocks were found."""
    children = list(model.named_children())
    start = _head_start(model, children)
    body, head = children[:start], children[start:]
    direct = _direct(model)
    head_direct = direct if _is_transformers_model(model) and start < len(children) and start > 0 else {}
    body_direct = {} if head_direct else direct
    extra, head = _split_torchvision_head(model, head)
    parts = _walk(body, body_direct, "", model) + extra
    has_blocks = any(_is_block_list(c) or _contains_block_list(c) for _, c in body)
    if len(parts) <= 1 and not has_blocks:  # no structure found (a plain Sequential, ALBERT): one group per layer
        while len(body) == 1 and list(body[0][1].children()):
            body = [(f"{body[0][0]}.{n}", c) for n, c in body[0][1].named_children()]
        parts = [_stage_part(s, "") for s in _flat_stages(body)] if body else []
        if body_direct:
            parts.insert(0, ("+".join(body_direct), [], list(body_direct.values())))
        has_blocks = len(parts) >= 2 and _is_flat_list(body)
    head_params = list(head_direct.values()) + [p for _, c in head for p in c.parameters()]
    if head_params:
        names = list(head_direct) + [n for n, c in head if _has_params(c)]
        parts.append(("+".join(names), [c for _, c in head], head_params))
    return parts, has_blocks


def _assign(parts: list[Part]) -> list[LayerGroup]:
    """LayerGroups with each parameter in one group: a tied weight (an LM head's embedding) goes to the last one using it."""
    last: dict[int, int] = {}
    for i, (_, _, params) in enumerate(parts):
        for p in params:
            last[id(p)] = i
    groups = []
    for i, (name, modules, params) in enumerate(parts):
        seen: set[int] = set()
        mine = [p for p in params if last[id(p)] == i and not (id(p) in seen or seen.add(id(p)))]
        if mine:
            groups.append(LayerGroup(name, modules, mine))
    return groups


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Cut `model` into ordered LayerGroups (stem ... blocks ... head); a model's own `layer_groups()` method wins.

    Works for torchvision and timm CNNs and ViTs, transformers encoders (BERT family, DeBERTa, wav2vec2, Whisper),
    peft models (the groups of the wrapped model), plain nn.Sequential stacks, and any model wrapping one of them as
    `.backbone` with a `.head`. The last group is the head.
    """
    return split_model(model)[0]
