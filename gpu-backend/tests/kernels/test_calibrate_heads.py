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


def test_streaming_output_masks_only_the_streaming_kv_head():
    from edgeserve_pod.tools.calibrate_heads import streaming_output

    T, D, sink, window = 40, 8, 3, 5
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    q, k, v = (torch.randn(T, n, D, generator=gen) for n in (4, 2, 2))  # GQA: 2 query heads per kv head
    o = streaming_output(q, k, v, 0.5, sink, window, torch.tensor([False, True]))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for h in range(4):
        keep = (j <= i) & (((j < sink) | (i - j < window)) if h >= 2 else True)
        s = (q[:, h] @ k[:, h // 2].T * 0.5).masked_fill(~keep, float("-inf"))
        torch.testing.assert_close(o[:, h], s.softmax(-1) @ v[:, h // 2], atol=1e-5, rtol=1e-5)


def test_ablation_probe_reruns_exactly_and_sees_the_window(tmp_path):
    """On a tiny random model: a window that covers the whole prompt changes nothing, so every
    ablation drop is 0 (the rerun from a layer's cached input reproduces the dense pass); a
    small window changes the answer's likelihood for some head."""
    from edgeserve_pod.tools.calibrate_heads import ablation_probe, load_model
    from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint

    path = write_random_checkpoint("tiny", str(tmp_path / "tiny"), seed=0)

    class Tok:  # one token per character, ids inside the tiny vocabulary
        def encode(self, s):
            return [ord(c) % 200 for c in s]

    hay = [(7 * i) % 200 for i in range(4000)]
    model, rec = load_model(path, 4, 300, 256)
    drops = ablation_probe(model, rec, Tok(), hay, 256, 1, log=lambda *_: None)
    assert drops.shape == (len(model.layers), rec.num_kv_heads)
    assert drops.abs().max() < 1e-4
    rec.sink, rec.window = 4, 16
    drops = ablation_probe(model, rec, Tok(), hay, 256, 1, log=lambda *_: None)
    assert drops.abs().max() > 1e-3
