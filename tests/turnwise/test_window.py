import pytest

from turnwise.window import (
    SYS_TAG,
    USR_TAG,
    WindowConfig,
    encode_windows,
    pad_batch,
    render_window,
    role_tag,
    windows_of,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    from trainer.model import load_tokenizer

    return load_tokenizer(str(tiny_backbone))


@pytest.mark.parametrize("speaker,tag", [("agent", SYS_TAG), ("System", SYS_TAG), ("assistant", SYS_TAG),
                                         ("customer", USR_TAG), ("user", USR_TAG), ("Rachel", USR_TAG)])
def test_role_mapping(speaker, tag):
    assert role_tag(speaker) == tag


def test_render_orders_oldest_to_newest_and_limits_turns():
    turns = [{"speaker": "customer", "text": f"t{i}"} for i in range(5)]
    assert render_window(turns, WindowConfig(max_turns=2)) == "[usr] t3 [usr] t4"


def test_encoding_equals_tokenizing_the_joined_string(tokenizer):
    turns = [{"speaker": "customer", "text": "My card was charged twice!"},
             {"speaker": "agent", "text": "Sorry about that, which card?"}]
    ids = encode_windows([turns], tokenizer, WindowConfig(max_tokens=128))[0]
    assert ids == tokenizer("[usr] My card was charged twice! [sys] Sorry about that, which card?")["input_ids"]
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks[1] == USR_TAG and SYS_TAG in toks  # role tags are single tokens


def test_left_truncation_keeps_newest_words(tokenizer):
    turns = [{"speaker": "customer", "text": "alpha " * 50}, {"speaker": "agent", "text": "the newest words survive"}]
    ids = encode_windows([turns], tokenizer, WindowConfig(max_tokens=10))[0]
    assert len(ids) == 10
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert toks[-5:-1] == ["the", "newest", "words", "survive"]


def test_batch_and_padding(tokenizer):
    short = [{"speaker": "agent", "text": "hi"}]
    long = [{"speaker": "customer", "text": "hello there how are you"}]
    seqs = encode_windows([short, long], tokenizer, WindowConfig())
    batch = pad_batch(seqs, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, len(seqs[1]))
    assert batch["attention_mask"][0].sum() == len(seqs[0])
    assert batch["input_ids"][0, len(seqs[0]):].tolist() == [tokenizer.pad_token_id] * (len(seqs[1]) - len(seqs[0]))


def test_segments_are_prefixes():
    turns = list(range(5))
    assert windows_of(turns, WindowConfig(max_turns=3)) == [[0], [0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_empty_window_and_bad_config(tokenizer):
    with pytest.raises(ValueError):
        encode_windows([[]], tokenizer, WindowConfig())
    with pytest.raises(ValueError):
        WindowConfig(max_tokens=2)
    with pytest.raises(ValueError):
        WindowConfig(format="other")
