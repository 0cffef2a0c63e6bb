"""A ROOT workflow on the outputs of ``sim2real run``: predictions.root as a friend of the events tree.

    python examples/rdataframe_selection.py REAL.root sim2real-run/predictions.root --method mmd \
        [--class 0] [--threshold 0.5] [--split 1] [--out selected.root]

The run writes ``predictions.root`` (tree ``results``) with one entry per event of the real file, in its
order, so ROOT reads it as a friend of the file's ``events`` tree. An RDataFrame over the pair keeps the
test events (``results.split == 1``) whose ``<method>_score`` for the class exceeds the threshold and
writes the histogram of their incident energy (GeV) to ``--out``; it prints how many were kept.
"""

from __future__ import annotations

import argparse
import sys


def select(events: str, predictions: str, *, method: str, label: int = 0, threshold: float = 0.5, split: int = 1,
           out: str = "selected.root") -> int:
    """Writes TH1D ``energy`` of the selected events to ``out``; returns how many were selected."""
    import ROOT

    events_file = ROOT.TFile.Open(events)
    if not events_file or events_file.IsZombie():
        raise OSError(f"{events}: cannot be opened by ROOT")
    tree = events_file.Get("events")
    if not tree:
        raise KeyError(f"{events}: no tree 'events'")
    tree.AddFriend("results", predictions)
    score = f"results.{method.replace('+', '_')}_score[{label}]"
    frame = ROOT.RDataFrame(tree).Filter(f"results.split == {split}").Filter(f"{score} > {threshold}")
    histogram = frame.Histo1D(("energy", f"{method} score[{label}] > {threshold};incident energy [GeV];events",
                               50, 0.0, 100.0), "energy")
    selected = int(frame.Count().GetValue())
    output = ROOT.TFile.Open(out, "RECREATE")
    histogram.Write()
    output.Close()
    return selected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events")
    parser.add_argument("predictions")
    parser.add_argument("--method", required=True)
    parser.add_argument("--class", dest="label", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--split", type=int, default=1)
    parser.add_argument("--out", default="selected.root")
    args = parser.parse_args()
    n = select(args.events, args.predictions, method=args.method, label=args.label, threshold=args.threshold,
               split=args.split, out=args.out)
    print(f"{n} events selected; histogram 'energy' written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
