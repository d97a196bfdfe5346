"""torch.compile on the vectorised detector, run for real by inductor on the CPU (~100 s).

The only place the compiled path executes without a GPU. It must give the eager boxes and must
not compile again for every new batch size: a step's short last batch, or an OOM-halved one,
would otherwise each pay a full compile (~25 s on this CPU) until dynamo's cache limit quietly
sends the module back to eager.
"""

from __future__ import annotations

import pytest
from torch._dynamo.utils import counters

from image_search_assets.core.inference.engine import EngineStats, detect_boxes
from tests.core.inference.engine.conftest import CLASS_IDS, jpeg, product

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


@pytest.mark.e2e  # minutes: a real inductor compile
def test_compiled_detection_matches_eager_with_one_recompile_for_all_batch_sizes(ssdlite):
    blobs = [jpeg(product(i)) for i in range(11)]  # batches of 4, 4, 3, then of 2
    options = {"class_ids": CLASS_IDS, "score_threshold": 0.35, "amp": None}
    eager = detect_boxes(ssdlite, blobs, batch_size=4, **options)
    graphs_before = counters["stats"]["unique_graphs"]
    stats = EngineStats()
    compiled = detect_boxes(ssdlite, blobs, batch_size=4, compile=True, stats=stats, **options)
    again = detect_boxes(ssdlite, blobs[:10], batch_size=2, compile=True, **options)
    assert stats.precision == "fp32+compile"
    for got in (compiled, again):
        assert [(b.label, b.box_source, b.candidates) for b in got] == [
            (b.label, b.box_source, b.candidates) for b in eager[: len(got)]
        ]
        for want, have in zip(eager[: len(got)], got, strict=True):
            # Fused kernels round differently: ~1e-5 relative, 0.001 px here.
            assert (have.x1, have.y1, have.x2, have.y2) == pytest.approx(
                (want.x1, want.y1, want.x2, want.y2), abs=0.01
            )
            assert have.score == pytest.approx(want.score, abs=1e-4)
    assert sum(b.box_source == "detector" for b in eager) >= 3  # boxes, not only full frames
    # Backbone and head: each one static graph for 4, one dynamic graph for 3 and 2. (A batch
    # of 1 would add one more each: dynamo always specialises size-1 dimensions.)
    assert counters["stats"]["unique_graphs"] - graphs_before <= 4
