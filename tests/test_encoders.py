"""Encoders: output shapes per config, recurrent carry semantics, glyph feature tables.

Shape tests use ``jax.eval_shape`` (trace only, no XLA compile) to stay fast on small CPUs.
"""

import dataclasses

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nle import nethack

from omega.models import encoders as enc
from omega.models.encoders import EncoderConfig, initial_carry, make_encoder, param_count

B = 3
SMALL = dict(embed_dim=8, cnn_channels=(4,), num_latents=4, latent_dim=8, num_heads=2,
             num_self_attention_blocks=1, mlp_hidden=16, blstats_hidden=8, output_dim=12)


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
    """These programs are tiny: XLA's optimisation passes would take longer than running them
    unoptimised. Scoped to this module so other tests compile as usual."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def make_obs(keys, batch=B, crop=5, seed=0):
    rng = np.random.default_rng(seed)
    full = {
        "glyphs": rng.integers(0, nethack.MAX_GLYPH, (batch, 21, 79)).astype(np.int16),
        "glyphs_crop": rng.integers(0, nethack.MAX_GLYPH + 1, (batch, crop, crop)).astype(np.int16),
        "blstats": rng.normal(size=(batch, nethack.NLE_BLSTATS_SIZE)).astype(np.float32),
        "message": rng.integers(0, 256, (batch, 256)).astype(np.uint8),
    }
    return {k: full[k] for k in keys}


@pytest.mark.parametrize("kind", ["plain", "perceiver"])
@pytest.mark.parametrize("map_", ["crop", "full", "both"])
@pytest.mark.parametrize("blstats", [True, False])
def test_output_shape(kind, map_, blstats):
    cfg = EncoderConfig(kind=kind, map=map_, **SMALL)
    keys = list(cfg.map_keys) + (["blstats"] if blstats else []) + ["message"]  # extra key ignored
    obs = make_obs(keys)
    model = make_encoder(cfg)
    first = jnp.ones(B, bool)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), obs, first, None)
    h, carry = jax.eval_shape(model.apply, params, obs, first, None)
    assert h.shape == (B, cfg.output_dim)
    assert carry is None
    assert param_count(params) > 0
    has_blstats = "blstats" in params["params"]
    assert has_blstats == blstats


@pytest.mark.parametrize("positional", ["learned", "fixed"])
def test_recurrent_perceiver_shapes(positional):
    cfg = EncoderConfig(kind="perceiver", map="both", recurrent=True, positional=positional,
                        use_message=True, **SMALL)
    obs = make_obs(["glyphs", "glyphs_crop", "blstats", "message"])
    model = make_encoder(cfg)
    carry0 = initial_carry(cfg, B)
    assert carry0.shape == (B, cfg.num_latents, cfg.latent_dim)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), obs, jnp.ones(B, bool), carry0)
    h, carry = jax.eval_shape(model.apply, params, obs, jnp.ones(B, bool), carry0)
    assert h.shape == (B, cfg.output_dim)
    assert carry.shape == carry0.shape
    assert ("pos_glyphs" in params["params"]) == (positional == "learned")


def test_recurrent_carry_changes_and_resets_to_initial_latents():
    cfg = EncoderConfig(kind="perceiver", map="crop", recurrent=True,
                        **dict(SMALL, num_self_attention_blocks=0))
    model = make_encoder(cfg)
    obs = make_obs(["glyphs_crop", "blstats"])
    params = jax.jit(model.init)(jax.random.PRNGKey(0), obs, jnp.ones(B, bool),
                                 initial_carry(cfg, B))
    apply = jax.jit(model.apply)
    all_first, none_first = jnp.ones(B, bool), jnp.zeros(B, bool)

    h1, c1 = apply(params, obs, all_first, initial_carry(cfg, B))
    h2, c2 = apply(params, obs, none_first, c1)
    assert not np.allclose(c1, initial_carry(cfg, B))
    assert not np.allclose(c2, c1), "the same obs twice must still move the memory"
    assert not np.allclose(h2, h1), "the output must depend on the carried latents"

    # first=True ignores whatever carry it is given; first=False rows continue.
    mixed = jnp.array([True, False, True])
    h3, c3 = apply(params, obs, mixed, c2)
    h_cont, c_cont = apply(params, obs, none_first, c2)
    np.testing.assert_array_equal(h3[mixed], h1[mixed])
    np.testing.assert_array_equal(c3[mixed], c1[mixed])
    np.testing.assert_array_equal(c3[~mixed], c_cont[~mixed])
    np.testing.assert_array_equal(h3[~mixed], h_cont[~mixed])
    # ... and starts exactly from the learned initial latents.
    latents = jnp.broadcast_to(params["params"]["latents"], c1.shape)
    h4, c4 = apply(params, obs, none_first, latents)
    np.testing.assert_allclose(h4, h1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c4, c1, rtol=1e-6, atol=1e-6)


def test_initial_carry_none_when_not_recurrent():
    assert initial_carry(EncoderConfig(kind="perceiver"), 4) is None
    assert initial_carry(EncoderConfig(kind="plain"), 4) is None


def test_config_validation():
    with pytest.raises(ValueError, match="recurrent"):
        EncoderConfig(kind="plain", recurrent=True)
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(kind="perceiver", latent_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="kind"):
        EncoderConfig(kind="transformer")
    cfg = EncoderConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kind = "perceiver"  # type: ignore[misc]
    assert hash(cfg) == hash(EncoderConfig())  # usable as a static jit argument


@pytest.mark.parametrize("kind", ["plain", "perceiver"])
def test_coarse_view_is_read_when_observed(kind):
    cfg = EncoderConfig(kind=kind, map="crop", **SMALL)
    model = make_encoder(cfg)
    obs = make_obs(["glyphs_crop", "blstats"])
    coarse = np.asarray(make_obs(["glyphs_crop"], seed=1)["glyphs_crop"])
    assert "glyphs_coarse" in cfg.used_keys()
    plain = model.init(jax.random.PRNGKey(0), obs, None, None)
    params = model.init(jax.random.PRNGKey(0), {**obs, "glyphs_coarse": coarse}, None, None)
    assert param_count(params) > param_count(plain)  # its own weights (or positions)
    other = coarse.copy()
    other[:, 0, 0] = (other[:, 0, 0] + 1) % nethack.MAX_GLYPH
    h1, _ = model.apply(params, {**obs, "glyphs_coarse": coarse}, None, None)
    h2, _ = model.apply(params, {**obs, "glyphs_coarse": other}, None, None)
    assert not np.allclose(h1, h2)


def test_missing_map_key_is_a_clear_error():
    cfg = EncoderConfig(map="full", **SMALL)
    obs = make_obs(["glyphs_crop"])
    with pytest.raises(KeyError, match="glyphs"):
        jax.eval_shape(make_encoder(cfg).init, jax.random.PRNGKey(0), obs, None, None)


@pytest.mark.parametrize("kind", ["plain", "perceiver"])
def test_visited_crop_changes_the_encoding_only_where_read(kind):
    cfg = EncoderConfig(kind=kind, map="crop", **SMALL)
    model = make_encoder(cfg)
    obs = make_obs(["glyphs_crop", "blstats"])
    visited = np.zeros((B, 5, 5), np.uint8)
    visited[:, 2, 2] = 1
    params = model.init(jax.random.PRNGKey(0), {**obs, "visited_crop": visited}, None, None)
    assert "visited" in params["params"]
    assert "visited_crop" in cfg.used_keys()
    # Initialised visit embeddings differ, so a map with one more visited cell encodes differently.
    more = visited.copy()
    more[:, 2, 3] = 1
    h1, _ = model.apply(params, {**obs, "visited_crop": visited}, None, None)
    h2, _ = model.apply(params, {**obs, "visited_crop": more}, None, None)
    assert not np.allclose(h1, h2)
    assert "visited_crop" not in EncoderConfig(map="full").used_keys()


def test_glyph_feature_tables():
    n = enc.NUM_GLYPHS
    assert n == nethack.MAX_GLYPH + 1
    for table, size in ((enc.GLYPH_GROUP, enc.NUM_GROUPS), (enc.GLYPH_CHAR, enc.NUM_CHARS),
                        (enc.GLYPH_COLOR, enc.NUM_COLORS)):
        assert table.shape == (n,) and table.dtype == np.int32
        assert table.min() >= 0 and table.max() < size
    groups = enc.GLYPH_GROUPS
    assert enc.GLYPH_GROUP[nethack.MAX_GLYPH] == groups.index("padding")
    assert (enc.GLYPH_GROUP[:nethack.MAX_GLYPH] != groups.index("padding")).all()
    # Monster 0 is the giant ant: 'a' as a monster, a pet and a statue; '%' as a corpse.
    for off in (nethack.GLYPH_MON_OFF, nethack.GLYPH_PET_OFF, nethack.GLYPH_STATUE_OFF):
        assert chr(enc.GLYPH_CHAR[off]) == "a"
    assert chr(enc.GLYPH_CHAR[nethack.GLYPH_BODY_OFF]) == "%"
    assert enc.GLYPH_GROUP[nethack.GLYPH_PET_OFF] == groups.index("pet")
    floor = nethack.GLYPH_CMAP_OFF + 19  # S_room
    assert chr(enc.GLYPH_CHAR[floor]) == "." and enc.GLYPH_GROUP[floor] == groups.index("cmap")
    assert chr(enc.GLYPH_CHAR[nethack.GLYPH_CMAP_OFF + 24]) == ">"  # S_dnstair
    assert chr(enc.GLYPH_CHAR[nethack.GLYPH_INVIS_OFF]) == "I"
    # Objects: the glyph's char is its class symbol (e.g. weapons ')').
    assert chr(enc.GLYPH_CHAR[nethack.GLYPH_OBJ_OFF + 1]) == ")"


def test_sinusoidal_2d_distinct_positions():
    pos = enc.sinusoidal_2d(9, 11, 16)
    assert pos.shape == (9, 11, 16) and pos.dtype == np.float32
    flat = pos.reshape(-1, 16)
    dists = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    assert (dists + np.eye(len(flat)) > 1e-3).all(), "every cell gets its own code"


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_matches_flax_conv(stride):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 10, 3)).astype(np.float32)  # odd and even sides
    params = {"params": {"kernel": rng.normal(size=(3, 3, 3, 5)).astype(np.float32),
                         "bias": rng.normal(size=5).astype(np.float32)}}
    ours = jax.jit(enc.Conv3x3(5, stride).apply)(params, x)
    ref = jax.jit(flax.linen.Conv(5, (3, 3), strides=stride, padding="SAME").apply)(params, x)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
