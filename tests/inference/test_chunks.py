"""Chunk partial results: atomic, byte-identical when written twice, read back unchanged."""

import numpy as np
from inference_synthetic import candidates_for, disk, small_plan

from model.inference.chunks import ChunkResult, chunk_done, read_chunk, write_chunk


def _result():
    plan = small_plan()
    mask = disk((64, 64), (20, 20), 6)
    cands = candidates_for(plan, [(t.index, mask, np.arange(96.0)) for t in plan.tiles[:4]])
    images = np.random.default_rng(0).random((9, 3, 32, 32)).astype(np.float32)
    return ChunkResult("w00000-g0000", 0, tuple(range(9)), cands, images)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_rewriting_a_chunk_gives_the_same_bytes(tmp_path):
    first = _files(write_chunk(tmp_path, _result()))
    second = _files(write_chunk(tmp_path, _result()))
    assert len(read_chunk(tmp_path, "w00000-g0000").candidates.tile) >= 1  # not an empty chunk
    assert first == second
    assert not [p for p in (tmp_path / "chunks").iterdir() if p.name.startswith(".tmp")]


def test_chunk_round_trip(tmp_path):
    result = _result()
    assert not chunk_done(tmp_path, result.chunk_id)
    write_chunk(tmp_path, result)
    assert chunk_done(tmp_path, result.chunk_id)
    back = read_chunk(tmp_path, result.chunk_id)
    assert back.tiles == result.tiles and back.window == 0
    assert len(back.candidates.tile) >= 1 and back.candidates.masks.any()  # not an empty chunk
    np.testing.assert_array_equal(back.candidates.masks, result.candidates.masks)
    np.testing.assert_array_equal(back.images, result.images)
