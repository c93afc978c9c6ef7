"""`pv survey build | serve | export | analyze`."""
from __future__ import annotations

import argparse
import os
import sys

ADMIN_TOKEN_ENV = "PV_SURVEY_ADMIN_TOKEN"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pv survey", description="The Perception Visualization user study (see survey/README.md).")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="select questions, render both arms' images, write the manifest",
                           description="Select questions from `pv analyze` output, render the PV and Grad-CAM arms "
                                       "and write STUDY/manifest.json plus STUDY/preview.html (researcher view, with the key).")  # fmt: skip
    build.add_argument("--analysis", required=True, help="folder holding predictions.csv from `pv analyze` (or the CSV itself)")
    build.add_argument("--classifier", required=True, help="classifier checkpoint")
    build.add_argument("--decoder", required=True, help="PV decoder checkpoint trained on the classifier's latent")
    build.add_argument("--out", required=True, help="study folder to create, e.g. survey/studies/NAME")
    build.add_argument("--correct", type=int, default=16, help="questions from correctly classified images (default 16)")
    build.add_argument("--incorrect", type=int, default=14, help="questions from wrongly classified images (default 14)")
    build.add_argument("--seed", type=int, default=0, help="seed for question selection and option order (default 0)")
    build.add_argument("--image-size", type=int, default=224, help="side of each rendered panel in pixels (default 224)")
    build.add_argument("--name", help="study name shown in reports (default: the folder name)")
    build.add_argument("--intro-pv", help="plain-text file replacing the PV arm's introduction (paragraphs split by blank lines)")
    build.add_argument("--intro-gradcam", help="plain-text file replacing the Grad-CAM arm's introduction")
    build.add_argument("--overwrite", action="store_true", help="rebuild an existing study (its answer key changes)")

    serve = sub.add_parser("serve", help="run the study web app",
                           description=f"Serve the study with waitress; responses go to a SQLite database (WAL). "
                                       f"Set {ADMIN_TOKEN_ENV} to enable GET /admin/status with 'Authorization: Bearer TOKEN'.")  # fmt: skip
    serve.add_argument("study", help="study folder made by `pv survey build`")
    serve.add_argument("--db", required=True, help="SQLite response database (created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    serve.add_argument("--secure-cookies", action="store_true", help="send the cookie over HTTPS only (behind a TLS proxy)")

    export = sub.add_parser("export", help="responses -> CSV", description="Write one CSV row per answer (drop-outs included).")
    export.add_argument("--db", required=True, help="SQLite response database")
    export.add_argument("--out", required=True, help="CSV file to write, e.g. responses.csv")

    analyze = sub.add_parser("analyze", help="Table 1, Mann-Whitney tests and Figure 6 as a Markdown report",
                             description="Accuracy per arm and subset (mean +- SE), one-tailed Mann-Whitney U tests, "
                                         "histograms (PNG) and report.md.")  # fmt: skip
    analyze.add_argument("--db", required=True, help="SQLite response database")
    analyze.add_argument("--manifest", required=True, help="the study folder or its manifest.json")
    analyze.add_argument("--out", required=True, help="report folder")
    analyze.add_argument("--alternative", default="greater", choices=("greater", "less", "two-sided"),
                         help="H1 for the first arm (PV) against the second (Grad-CAM); default greater")  # fmt: skip
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "build":
        from survey.build import build_study

        intros = {arm: path for arm, path in (("pv", args.intro_pv), ("gradcam", args.intro_gradcam)) if path}
        path = build_study(args.analysis, args.classifier, args.decoder, args.out, args.correct, args.incorrect, args.seed,
                           args.image_size, args.name, intros, args.overwrite)  # fmt: skip
        print(f"Wrote {path} and {path.parent / 'preview.html'} (researcher preview with the answer key)")
    elif args.command == "serve":
        from survey.serve import serve

        serve(args.study, args.db, args.host, args.port, args.threads, os.environ.get(ADMIN_TOKEN_ENV) or None,
              args.secure_cookies, announce=lambda line: print(line, flush=True))  # fmt: skip
    elif args.command == "export":
        from survey.export import export_responses

        count = export_responses(args.db, args.out)
        print(f"Wrote {count} answers to {args.out}")
    elif args.command == "analyze":
        from survey.analyze import analyze

        report = analyze(args.db, args.manifest, args.out, args.alternative)
        print(f"Wrote {report} (with summary.json, per_participant.csv, hist_*.png)")
    return 0
