"""BANER building blocks: contrastive positions from offsets, the loss, input-restricted decoding."""

from __future__ import annotations

import pytest

from openie.methods.baner import (
    BoundaryError,
    BoundaryPositions,
    InputTokensLogitsProcessor,
    boundary_contrastive_loss,
    boundary_positions,
)


@pytest.fixture(scope="module")
def tok(tiny_decoder_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_decoder_path)


PROMPT = "Please extract the entity of person in the input sentence given below.\nInput: the doctor Grace Hopper met Bob ."


def test_positions_come_from_offsets_at_the_right_tokens(tok):
    enc = tok(PROMPT, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    anchor = (PROMPT.index("person"), PROMPT.index("person") + 6)
    start = PROMPT.index("Grace")
    end = start + len("Grace Hopper")
    [pos] = boundary_positions(offsets, anchor, [(start, end)])

    def text(i):
        return PROMPT[offsets[i][0]:offsets[i][1]]

    assert "person".endswith(text(pos.anchor).strip())
    first, last = pos.positives[0], pos.positives[-1]
    assert text(first).strip() and PROMPT[offsets[first][0]:offsets[first][1]].strip() in "Grace"
    assert "Hopper".endswith(text(last).strip())
    assert pos.negatives == (first - 2, first - 1, last + 1, last + 2)
    assert offsets[first - 1][1] <= start and offsets[last + 1][0] >= end  # just outside the entity
    with pytest.raises(BoundaryError):
        boundary_positions(offsets, anchor, [(len(PROMPT) + 5, len(PROMPT) + 9)])


def test_negatives_never_leave_the_sequence(tok):
    text = "Bob ."
    offsets = tok(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    [pos] = boundary_positions(offsets, (0, 3), [(0, 3)])
    assert all(0 <= n < len(offsets) for n in pos.negatives) and pos.positives[0] not in pos.negatives


def test_loss_matches_the_formula_and_pulls_boundaries_to_the_anchor():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    terms = [(0, BoundaryPositions(0, (2, 3), (1, 4)))]
    loss = boundary_contrastive_loss(hidden, terms)
    h = F.normalize(hidden[0], dim=-1)
    expected = -F.logsigmoid(h[2] @ h[0] + h[3] @ h[0] - h[1] @ h[0] - h[4] @ h[0])
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    opt = torch.optim.SGD([hidden], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        boundary_contrastive_loss(hidden, terms).backward()
        opt.step()
    assert float(boundary_contrastive_loss(hidden, terms)) < float(loss)
    assert float(boundary_contrastive_loss(hidden, [])) == 0.0


def test_constrained_generation_never_emits_a_token_outside_the_input(tiny_decoder_path, tok):
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval()
    texts = ["Grace Hopper met Bob in Paris .", "the river flows"]
    processor = InputTokensLogitsProcessor.for_inputs(tok, texts, num_beams=2)
    prompts = [f"Input: {t}\nEntities:" for t in texts]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, num_beams=2, do_sample=False,
                             logits_processor=LogitsProcessorList([processor]), pad_token_id=tok.eos_token_id)
    for row, allowed in enumerate(processor.allowed):
        generated = out[row, enc["input_ids"].shape[1]:].tolist()
        assert generated and set(generated) <= set(allowed)
    assert set(processor.allowed[0]) != set(processor.allowed[1])
