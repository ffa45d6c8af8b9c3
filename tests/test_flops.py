"""jflow.flops: convolutions, matrix products and loops counted per trip."""
import jax
import jax.numpy as jnp

from jflow.flops import count_flops


def test_matmul_and_conv_count_two_per_multiply_add():
    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert count_flops(lambda x, y: x @ y, a, b) == 2 * 3 * 5 * 7
    x = jax.ShapeDtypeStruct((2, 8, 10, 4), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
    conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert count_flops(conv, x, k) == 2 * (2 * 8 * 10 * 6) * (3 * 3 * 4)


def test_loops_count_every_trip():
    w, x = jnp.ones((16, 16)), jnp.ones((4, 16))
    one = count_flops(lambda x: jnp.tanh(x @ w), x)
    scan = count_flops(lambda x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None,
                                              length=7)[0], x)
    fori = count_flops(lambda x: jax.lax.fori_loop(0, 5, lambda i, c: jnp.tanh(c @ w), x), x)

    def solve(x):  # a solver-style loop: stops at 9 steps or when converged
        cond = lambda c: (c[0] < 9) & (jnp.max(jnp.abs(c[1])) > 1e-3)  # noqa: E731
        return jax.lax.while_loop(cond, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)), (0, x))[1]

    assert abs(scan - 7 * one) <= 7 * 4 and abs(fori - 5 * one) <= 5 * 4
    assert 9 * one <= count_flops(solve, x) <= 9 * one + 9 * 200  # + the condition's work


def test_compiled_count_is_what_xla_runs():
    """Unused and shared work drops out, loops multiply by their trip count, conditionals count
    their costliest branch; a loop that stops on a test counts ``unknown_trips`` times."""
    from jflow.flops import count_compiled_flops

    w, x = jnp.ones((16, 16)), jnp.ones((4, 16))
    one = 2 * 4 * 16 * 16
    k = jnp.ones((3, 3, 16, 16))

    def conv(a):
        return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def unrolled(x, img):
        unused = jnp.tanh(x @ w) @ w  # dead: removed by XLA, counted on the jaxpr
        del unused
        return conv(img) + conv(img)  # shared (CSE)

    img = jnp.ones((2, 8, 8, 16))
    got = count_compiled_flops(jax.jit(unrolled).lower(x, img).compile())
    assert got == {"conv": 2 * (2 * 8 * 8 * 16) * (3 * 3 * 16), "dot": 0.0, "unknown_loops": 0}
    assert count_flops(unrolled, x, img) >= 2 * got["conv"] + 2 * one  # the jaxpr: all of it

    fori = jax.jit(lambda x: jax.lax.fori_loop(0, 5, lambda i, c: jnp.tanh(c @ w), x))
    assert count_compiled_flops(fori.lower(x).compile())["dot"] == 5 * one

    def solve(x):  # stops on a test: XLA cannot know the trips
        cond = lambda c: (c[0] < 9) & (jnp.max(jnp.abs(c[1])) > 1e-3)  # noqa: E731
        return jax.lax.while_loop(cond, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)), (0, x))[1]

    got = count_compiled_flops(jax.jit(solve).lower(x).compile(), unknown_trips=9)
    assert got["dot"] == 9 * one and got["unknown_loops"] == 1

    branchy = jax.jit(lambda p, x: jax.lax.cond(p, lambda x: (x @ w) @ w, lambda x: x @ w, x))
    assert count_compiled_flops(branchy.lower(True, x).compile())["dot"] == 2 * one


def test_compiled_count_reads_nested_tuple_loops():
    """A loop whose carry prints as a nested tuple still multiplies its body (hand-written HLO)."""
    from jflow.flops import count_compiled_flops

    hlo = """HloModule m
%body (p: (s32[], (f32[4,16], f32[16,16]))) -> (s32[], (f32[4,16], f32[16,16])) {
  %p = (s32[], (f32[4,16]{1,0}, f32[16,16]{1,0})) parameter(0)
  %a = f32[4,16]{1,0} parameter(1)
  %w = f32[16,16]{1,0} parameter(2)
  %d = f32[4,16]{1,0} dot(%a, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %t = (s32[], (f32[4,16]{1,0}, f32[16,16]{1,0})) tuple(%p)
}
ENTRY %main (x: f32[4,16]) -> (s32[], (f32[4,16], f32[16,16])) {
  %init = (s32[], (f32[4,16]{1,0}, f32[16,16]{1,0})) parameter(0)
  ROOT %loop = (s32[], (f32[4,16]{1,0}, f32[16,16]{1,0})) while(%init), condition=%c, body=%body, backend_config={"known_trip_count":{"n":"7"}}
}
"""
    assert count_compiled_flops(hlo) == {"conv": 0.0, "dot": 7 * 2 * 4 * 16 * 16,
                                         "unknown_loops": 0}
