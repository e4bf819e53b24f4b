"""Observation encoders: a dict of NetHack observations -> one state vector per env.

Two families share one interface, ``encoder.apply(params, obs, first, carry) -> (h, carry)``:

- :class:`PlainEncoder`: glyph embeddings, a small CNN per map view, an MLP over blstats.
- :class:`PerceiverEncoder`: glyph embeddings + 2-D positions become tokens; a few learned
  latent "memory units" cross-attend to them (cost linear in the number of map cells, so the
  full 21x79 map is affordable), then self-attend. With ``recurrent=True`` the latents are
  carried from one step to the next and reset to the learned initial latents where
  ``first`` is True, so the latents act as a memory of what the agent has seen.

Observation keys (leading batch dim ``B``): ``glyphs`` int [B, 21, 79], ``glyphs_crop``
int [B, H, W] (``MAX_GLYPH`` pads cells outside the map), ``visited_crop`` int [B, H, W]
(read with the crop when present: a learned vector added where the hero has been),
``glyphs_coarse`` int [B, H, W] (a window 3x as wide, one glyph per 3x3 block),
``blstats`` float [B, K], ``message`` uint8 [B, 256]. Which map views are read is
``EncoderConfig.map``, plus ``glyphs_coarse`` when present; ``blstats`` is used when
present, ``message`` only with ``use_message``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from nle import nethack

MAX_GLYPH = nethack.MAX_GLYPH
NUM_GLYPHS = MAX_GLYPH + 1  # + the padding id used outside the map in glyphs_crop
MAP_KEYS = {"crop": ("glyphs_crop",), "full": ("glyphs",), "both": ("glyphs_crop", "glyphs")}
# A further map view, read by either encoder whatever ``map`` says when it is observed.
COARSE_KEY = "glyphs_coarse"


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    kind: Literal["plain", "perceiver"] = "plain"
    map: Literal["crop", "full", "both"] = "crop"  # which glyph views are read
    embed_dim: int = dataclasses.field(default=32, metadata={"min": 4})
    glyph_features: bool = True  # add group/char/colour embeddings to the per-glyph one
    positional: Literal["learned", "fixed"] = "learned"  # perceiver token positions
    use_message: bool = False  # embed the message bytes (bag of bytes)
    # plain
    cnn_channels: tuple[int, ...] = (16, 16)
    # perceiver
    num_latents: int = dataclasses.field(default=16, metadata={"min": 1})
    latent_dim: int = dataclasses.field(default=64, metadata={"min": 4})
    num_cross_attention_heads: int = dataclasses.field(default=1, metadata={"min": 1})
    num_self_attention_blocks: int = dataclasses.field(default=2, metadata={"min": 0})
    num_heads: int = dataclasses.field(default=4, metadata={"min": 1})
    recurrent: bool = False  # latents carry across steps (perceiver only)
    # shared
    mlp_hidden: int = dataclasses.field(default=256, metadata={"min": 1})
    blstats_hidden: int = dataclasses.field(default=64, metadata={"min": 1})
    output_dim: int = dataclasses.field(default=256, metadata={"min": 1})

    def __post_init__(self):
        if self.kind not in ("plain", "perceiver"):
            raise ValueError(f"kind must be 'plain' or 'perceiver', got {self.kind!r}")
        if self.map not in MAP_KEYS:
            raise ValueError(f"map must be 'crop', 'full' or 'both', got {self.map!r}")
        if self.positional not in ("learned", "fixed"):
            raise ValueError(f"positional must be 'learned' or 'fixed', got {self.positional!r}")
        if self.recurrent and self.kind != "perceiver":
            raise ValueError("recurrent=true needs kind='perceiver' (the latents are the memory)")
        if self.kind == "perceiver":
            if self.positional == "fixed" and self.embed_dim % 4:
                raise ValueError(f"positional='fixed' needs embed_dim divisible by 4, got "
                                 f"{self.embed_dim}")
            for heads, name in ((self.num_heads, "num_heads"),
                                (self.num_cross_attention_heads, "num_cross_attention_heads")):
                if self.latent_dim % heads:
                    raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by "
                                     f"{name} ({heads})")

    @property
    def map_keys(self) -> tuple[str, ...]:
        return MAP_KEYS[self.map]

    def used_keys(self) -> tuple[str, ...]:
        """Observation keys this encoder may read (others can be dropped before jit)."""
        visited = ("visited_crop",) if "glyphs_crop" in self.map_keys else ()
        return (self.map_keys + visited + (COARSE_KEY, "blstats")
                + (("message",) if self.use_message else ()))


# ---------------------------------------------------------------------------------------------
# Glyph feature tables: glyph id -> (group, ASCII char, colour), as NetHack's mapglyph() draws
# them. Glyph ids are arbitrary; these shared features let rare glyphs (a monster seen once)
# borrow what the agent learned about frequent ones with the same letter or colour.

GLYPH_GROUPS = ("monster", "pet", "invisible", "detected", "corpse", "ridden", "object", "cmap",
                "explosion", "zap", "swallow", "warning", "statue", "padding")
NUM_GROUPS = len(GLYPH_GROUPS)
NUM_CHARS = 256
NUM_COLORS = 17  # NetHack's 16 colours + padding
_PAD_COLOR = 16
_CLR_WHITE, _CLR_GRAY, _NO_COLOR = 15, 7, 8
_S_VBEAM, _S_SW_TL, _S_EXPLODE1 = 65, 79, 87  # first zap, swallow and explosion cmap symbols
# Colours of explosion kinds (dark, noxious, muddy, wet, magical, fiery, frosty), zap kinds
# (missile, fire, frost, sleep, death, lightning, poison gas, acid) and warning levels 0..5.
_EXPLODE_COLORS = (0, 2, 3, 4, 5, 9, 15)
_ZAP_COLORS = (12, 9, 15, 12, 0, 15, 11, 2)
_WARN_COLORS = (15, 1, 1, 1, 5, 13)


def _glyph_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = nethack
    group = np.full(NUM_GLYPHS, GLYPH_GROUPS.index("padding"), np.int32)
    char = np.zeros(NUM_GLYPHS, np.int32)
    color = np.full(NUM_GLYPHS, _PAD_COLOR, np.int32)
    mon_char = np.array([ord(n.class_sym.from_mlet(n.permonst(i).mlet).sym)
                         for i in range(n.NUMMONS)], np.int32)
    mon_color = np.array([n.permonst(i).mcolor for i in range(n.NUMMONS)], np.int32)
    cmap = [n.symdef.from_idx(i) for i in range(n.MAXPCHARS)]
    cmap_char = np.array([ord(s.sym) if isinstance(s.sym, str) else s.sym for s in cmap], np.int32)
    cmap_color = np.array([s.color for s in cmap], np.int32)

    def fill(name: str, offset: int, chars: np.ndarray, colors: np.ndarray) -> None:
        sl = slice(offset, offset + len(chars))
        group[sl], char[sl], color[sl] = GLYPH_GROUPS.index(name), chars, colors

    for name, offset in (("monster", n.GLYPH_MON_OFF), ("pet", n.GLYPH_PET_OFF),
                         ("detected", n.GLYPH_DETECT_OFF), ("ridden", n.GLYPH_RIDDEN_OFF)):
        fill(name, offset, mon_char, mon_color)
    fill("invisible", n.GLYPH_INVIS_OFF, np.array([ord("I")]), np.array([_NO_COLOR]))
    fill("corpse", n.GLYPH_BODY_OFF, np.full(n.NUMMONS, ord("%")), mon_color)
    fill("statue", n.GLYPH_STATUE_OFF, mon_char, np.full(n.NUMMONS, _CLR_WHITE))
    objs = [n.objclass(i) for i in range(n.NUM_OBJECTS)]
    fill("object", n.GLYPH_OBJ_OFF,
         np.array([ord(n.class_sym.from_oc_class(o.oc_class).sym) for o in objs]),
         np.array([o.oc_color for o in objs]))
    num_cmap = n.GLYPH_EXPLODE_OFF - n.GLYPH_CMAP_OFF
    fill("cmap", n.GLYPH_CMAP_OFF, cmap_char[:num_cmap], cmap_color[:num_cmap])
    num_expl = n.MAXEXPCHARS
    fill("explosion", n.GLYPH_EXPLODE_OFF,
         np.tile(cmap_char[_S_EXPLODE1:_S_EXPLODE1 + num_expl], len(_EXPLODE_COLORS)),
         np.repeat(_EXPLODE_COLORS, num_expl))
    fill("zap", n.GLYPH_ZAP_OFF, np.tile(cmap_char[_S_VBEAM:_S_VBEAM + 4], n.NUM_ZAP),
         np.repeat(_ZAP_COLORS, 4))
    fill("swallow", n.GLYPH_SWALLOW_OFF, np.tile(cmap_char[_S_SW_TL:_S_SW_TL + 8], n.NUMMONS),
         np.repeat(mon_color, 8))
    fill("warning", n.GLYPH_WARNING_OFF, np.arange(ord("0"), ord("0") + n.WARNCOUNT),
         np.array(_WARN_COLORS[:n.WARNCOUNT]))
    char[MAX_GLYPH] = 0
    return group, char, color


GLYPH_GROUP, GLYPH_CHAR, GLYPH_COLOR = _glyph_tables()  # each int32 [NUM_GLYPHS]


# ---------------------------------------------------------------------------------------------
# Building blocks


class GlyphEmbedding(nn.Module):
    """glyph ids [...] -> [..., dim]; optionally + embeddings of group, char and colour."""

    dim: int
    features: bool = True

    @nn.compact
    def __call__(self, glyphs: jax.Array) -> jax.Array:
        ids = jnp.clip(glyphs.astype(jnp.int32), 0, MAX_GLYPH)
        glyph = nn.Embed(NUM_GLYPHS, self.dim, name="glyph")
        if not self.features:
            return glyph(ids)
        # The summed table over every glyph first [NUM_GLYPHS, dim], then one lookup per
        # cell: a wide crop has far more cells than there are glyphs, and one gather (and
        # one scatter in the backward pass) per cell instead of four is what it costs.
        table = glyph(jnp.arange(NUM_GLYPHS))
        for name, features, size in (("group", GLYPH_GROUP, NUM_GROUPS),
                                     ("char", GLYPH_CHAR, NUM_CHARS),
                                     ("color", GLYPH_COLOR, NUM_COLORS)):
            table = table + nn.Embed(size, self.dim, name=name)(jnp.asarray(features))
        return table[ids]


class Conv3x3(nn.Module):
    """3x3 'SAME' convolution [B, H, W, C] -> [B, ceil(H/s), ceil(W/s), F] as one matmul over
    3x3 patches. Same result and parameters as ``nn.Conv(F, (3, 3), s, padding="SAME")``,
    but XLA:CPU runs real convolutions ~8x slower inside loops (jax-ml/jax#12868), and PPO's
    update is a ``lax.scan``; a matmul is fast everywhere."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(  # [B, H, W, 9 C], ordered like the kernel's (i, j, c)
            [padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)], -1)
        # Output centres as XLA's 'SAME' places them (padding split low // 2, rest high).
        starts = []
        for n in (height, width):
            out = -(-n // self.stride)
            starts.append(1 - max((out - 1) * self.stride + 3 - n, 0) // 2)
        patches = patches[:, starts[0]::self.stride, starts[1]::self.stride]
        return patches @ kernel.reshape(9 * channels, self.features) + bias


class BlstatsMLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, blstats: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(blstats.astype(jnp.float32)))
        return nn.relu(nn.Dense(self.hidden)(x))


class MessageEncoder(nn.Module):
    """Bag of bytes: the mean embedding of the non-zero message bytes."""

    hidden: int

    @nn.compact
    def __call__(self, message: jax.Array) -> jax.Array:
        ids = message.astype(jnp.int32)
        mask = (ids > 0).astype(jnp.float32)[..., None]
        emb = nn.Embed(256, self.hidden)(ids)
        x = (emb * mask).sum(-2) / jnp.maximum(mask.sum(-2), 1.0)
        return nn.relu(nn.Dense(self.hidden)(x))


def _side_inputs(cfg: EncoderConfig, obs: Mapping[str, jax.Array]) -> list[jax.Array]:
    """Feature vectors from blstats (if present) and the message (if enabled)."""
    feats = []
    if "blstats" in obs:
        feats.append(BlstatsMLP(cfg.blstats_hidden, name="blstats")(obs["blstats"]))
    if cfg.use_message:
        if "message" not in obs:
            raise KeyError("EncoderConfig.use_message needs the 'message' observation key")
        feats.append(MessageEncoder(cfg.blstats_hidden, name="message")(obs["message"]))
    return feats


def _map_views(cfg: EncoderConfig, obs: Mapping[str, jax.Array]) -> list[tuple[str, jax.Array]]:
    """(key, glyphs [B, H, W]) of every map view read: ``cfg.map``'s, then the coarse view
    when observed."""
    missing = [k for k in cfg.map_keys if k not in obs]
    if missing:
        raise KeyError(f"EncoderConfig.map={cfg.map!r} needs observation key(s) {missing}; "
                       f"got {sorted(obs)}: add them to env.observation.keys or change model.map")
    keys = cfg.map_keys + ((COARSE_KEY,) if COARSE_KEY in obs else ())
    return [(k, obs[k]) for k in keys]


def _embed_view(embed: nn.Module, key: str, view: jax.Array,
                obs: Mapping[str, jax.Array]) -> jax.Array:
    """Embedded glyphs [B, H, W, E]; the crop also gets the visit flags when observed."""
    x = embed(view)
    if key == "glyphs_crop" and "visited_crop" in obs:
        chex.assert_equal_shape([view, obs["visited_crop"]])
        x = x + nn.Embed(2, x.shape[-1], name="visited")(obs["visited_crop"].astype(jnp.int32))
    return x


# ---------------------------------------------------------------------------------------------
# Plain encoder


class PlainEncoder(nn.Module):
    cfg: EncoderConfig

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array], first: jax.Array | None = None,
                 carry: Any = None) -> tuple[jax.Array, Any]:
        del first  # stateless
        cfg = self.cfg
        embed = GlyphEmbedding(cfg.embed_dim, cfg.glyph_features, name="embed")
        feats = []
        for key, view in _map_views(cfg, obs):
            chex.assert_rank(view, 3)  # [B, H, W]
            x = _embed_view(embed, key, view, obs)  # [B, H, W, E]
            # The full map is wide (21x79): strides keep the flattened features small.
            stride = 2 if view.shape[1:] == tuple(nethack.DUNGEON_SHAPE) else 1
            for ch in cfg.cnn_channels:
                x = nn.relu(Conv3x3(ch, stride)(x))
            x = x.reshape(x.shape[0], -1)
            feats.append(nn.relu(nn.Dense(cfg.mlp_hidden)(x)))
        feats += _side_inputs(cfg, obs)
        h = nn.relu(nn.Dense(cfg.output_dim, name="out")(jnp.concatenate(feats, -1)))
        return h, carry


# ---------------------------------------------------------------------------------------------
# Perceiver encoder


def sinusoidal_2d(height: int, width: int, dim: int) -> np.ndarray:
    """Fixed 2-D positional code [H, W, dim]: half the channels encode the row, half the col."""
    assert dim % 4 == 0, dim
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (np.arange(quarter) / quarter))  # [dim/4]

    def code(n: int) -> np.ndarray:
        angles = np.arange(n)[:, None] * freqs[None]  # [n, dim/4]
        return np.concatenate([np.sin(angles), np.cos(angles)], -1)  # [n, dim/2]

    rows = np.broadcast_to(code(height)[:, None], (height, width, dim // 2))
    cols = np.broadcast_to(code(width)[None], (height, width, dim // 2))
    return np.concatenate([rows, cols], -1).astype(np.float32)


class MLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out)(nn.gelu(nn.Dense(self.hidden)(x)))


class AttentionBlock(nn.Module):
    """Pre-LayerNorm attention + MLP, both residual. Self-attention when ``tokens`` is None."""

    num_heads: int
    mlp_hidden: int

    @nn.compact
    def __call__(self, latents: jax.Array, tokens: jax.Array | None = None) -> jax.Array:
        dim = latents.shape[-1]
        q = nn.LayerNorm()(latents)
        kv = q if tokens is None else nn.LayerNorm()(tokens)
        latents = latents + nn.MultiHeadDotProductAttention(
            self.num_heads, qkv_features=dim, out_features=dim, deterministic=True)(q, kv)
        return latents + MLP(self.mlp_hidden, dim)(nn.LayerNorm()(latents))


class PerceiverEncoder(nn.Module):
    """Latents [L, D] cross-attend to glyph tokens, then self-attend; ``carry`` = latents."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array], first: jax.Array | None = None,
                 carry: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        cfg = self.cfg
        embed = GlyphEmbedding(cfg.embed_dim, cfg.glyph_features, name="embed")
        tokens = []
        for key, view in _map_views(cfg, obs):
            chex.assert_rank(view, 3)  # [B, H, W]
            batch, height, width = view.shape
            x = _embed_view(embed, key, view, obs)  # [B, H, W, E]
            if cfg.positional == "fixed":
                pos = jnp.asarray(sinusoidal_2d(height, width, cfg.embed_dim))
            else:
                pos = self.param(f"pos_{key}", nn.initializers.normal(0.02),
                                 (height, width, cfg.embed_dim))
            # A per-view offset tells the latents which view a token came from.
            view_emb = self.param(f"view_{key}", nn.initializers.normal(0.02), (cfg.embed_dim,))
            tokens.append((x + pos + view_emb).reshape(batch, height * width, cfg.embed_dim))
        tokens = jnp.concatenate(tokens, 1)  # [B, M, E]
        batch = tokens.shape[0]

        init = self.param("latents", nn.initializers.truncated_normal(0.02),
                          (cfg.num_latents, cfg.latent_dim))
        latents = jnp.broadcast_to(init, (batch,) + init.shape)  # [B, L, D]
        if cfg.recurrent:
            chex.assert_shape(carry, (batch, cfg.num_latents, cfg.latent_dim))
            if first is None:
                first = jnp.zeros((batch,), bool)
            chex.assert_shape(first, (batch,))
            latents = jnp.where(first[:, None, None], latents, carry)

        latents = AttentionBlock(cfg.num_cross_attention_heads, cfg.mlp_hidden,
                                 name="cross")(latents, tokens)
        for i in range(cfg.num_self_attention_blocks):
            latents = AttentionBlock(cfg.num_heads, cfg.mlp_hidden, name=f"self_{i}")(latents)
        # Normalising the carried latents keeps them from drifting over long episodes.
        latents = nn.LayerNorm(name="latent_norm")(latents)
        new_carry = latents if cfg.recurrent else None

        feats = [nn.relu(nn.Dense(cfg.mlp_hidden)(latents.reshape(batch, -1)))]
        feats += _side_inputs(cfg, obs)
        h = nn.relu(nn.Dense(cfg.output_dim, name="out")(jnp.concatenate(feats, -1)))
        return h, new_carry


# ---------------------------------------------------------------------------------------------


def make_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder ``cfg`` describes; ``apply(params, obs, first, carry) -> (h [B, F], carry)``."""
    if cfg.kind == "plain":
        return PlainEncoder(cfg)
    if cfg.kind == "perceiver":
        return PerceiverEncoder(cfg)
    raise ValueError(f"unknown encoder kind {cfg.kind!r}")


def initial_carry(cfg: EncoderConfig, batch_size: int) -> jax.Array | None:
    """Carry before the first step: placeholder zeros [B, L, D] (recurrent) or None.

    The values never matter: a recurrent encoder replaces them by its learned initial latents
    wherever ``first`` is True, and every episode starts with ``first=True``.
    """
    if not cfg.recurrent:
        return None
    return jnp.zeros((batch_size, cfg.num_latents, cfg.latent_dim), jnp.float32)


def param_count(params: Any) -> int:
    return int(sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))
