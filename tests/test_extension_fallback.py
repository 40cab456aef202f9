"""Without the compiled extension the package still imports, warns once, and uses torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_missing_extension_falls_back_to_torch_and_warns_once() -> None:
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["alkernels._C"] = None  # makes `from alkernels import _C` raise ImportError
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import torch
            from alkernels import acquisition as acq
            logits = torch.randn(3, 20, 7)
            scores = acq.score_all(logits)                 # auto -> torch backend
            ref = acq.score_all(logits, backend="torch")
            idx, _ = acq.select(logits, "bald", 5)
            acq.topk(scores["margin"], 3)
        assert all(torch.equal(scores[k], ref[k]) for k in acq.STRATEGIES)
        assert idx.shape == (5,)
        ours = [w for w in caught if "alkernels._C is not available" in str(w.message)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        try:
            acq.score_all(logits, backend="cpu")
        except ValueError as err:
            assert "not built" in str(err)
        else:
            raise AssertionError("backend='cpu' without the extension must raise")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
