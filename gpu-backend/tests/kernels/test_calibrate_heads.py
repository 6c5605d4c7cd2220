"""Head calibration statistics: analytic case (uniform attention), planted local head, marking."""
import torch

from edgeserve_pod.tools.calibrate_heads import head_stats, mark_streaming


def test_uniform_head_mass_is_analytic_and_local_head_is_near_zero():
    T, D, sink, window = 64, 16, 4, 8
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.zeros(T, 2, D)  # kv head 0: q = 0 -> uniform attention over the causal prefix
    k = torch.randn(T, 2, D, generator=gen)
    v = torch.randn(T, 2, D, generator=gen)
    # kv head 1: each query matches only its own key strongly -> attention stays in the window
    basis = torch.nn.functional.normalize(torch.randn(T, D, generator=gen), dim=-1)
    k[:, 1] = basis
    q[:, 1] = 40.0 * basis
    _, mass, err = head_stats(q, k, v, 1.0, sink, window)
    i = torch.arange(sink + window, T).float()
    expected = (1 - (sink + window) / (i + 1)).mean()
    torch.testing.assert_close(mass[0], expected, atol=1e-5, rtol=1e-5)
    assert mass[1] < 0.05 and err[1] < err[0]


def test_mark_streaming_takes_smallest_up_to_ratio():
    mass = torch.tensor([[0.3, 0.01, 0.5], [0.02, 0.9, 0.2]])
    s = mark_streaming(mass, 0.5)
    assert s == [[False, True, False], [True, False, True]]
    assert sum(map(sum, mark_streaming(mass, 0.0))) == 0


def test_needle_mass_finds_the_head_that_reads_the_needle():
    from edgeserve_pod.tools.calibrate_heads import needle_mass

    T, D = 64, 16
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.zeros(T, 2, D)  # kv head 1: uniform attention -> mass = 4 / (i + 1) on a 4-token needle
    k = torch.randn(T, 2, D, generator=gen)
    v = torch.randn(T, 2, D, generator=gen)
    u = torch.nn.functional.normalize(torch.randn(D, generator=gen), dim=0)
    k[:, 0] *= 0.05
    k[10:14, 0] = u  # kv head 0: the answer rows look straight at the needle
    q[58:62, 0] = 40.0 * u
    rows, needle = slice(58, 62), slice(10, 14)
    _, mass = needle_mass(q, k, v, 1.0, rows, needle)
    assert mass[0] > 0.99
    torch.testing.assert_close(mass[1], (4 / torch.arange(59, 63).float()).mean(), atol=1e-5, rtol=1e-5)


def test_passkey_sample_places_needle_and_answer_rows():
    from edgeserve_pod.tools.calibrate_heads import passkey_sample

    class Tok:  # one token per character
        def encode(self, s):
            return [ord(c) for c in s]

    hay = [ord("x")] * 1000
    ids, rows, needle = passkey_sample(Tok(), hay, 400, 0.5, 123456)
    text = "".join(map(chr, ids.tolist()))
    assert len(ids) == 400 and text.endswith("The secret code is 123456")
    assert text[needle].startswith(" The secret code is 123456.")
    assert text[rows.start + 1:rows.stop + 1] == " 123456"  # rows predict the answer tokens
