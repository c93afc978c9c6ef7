"""pv models as Hugging Face folders and Hub repositories: model.safetensors, config.json, README.md.

`HubMixin` (huggingface_hub's `PyTorchModelHubMixin`) is a base of `Decoder` and `Classifier`, so
`save_pretrained(DIR, config=..., model_card_kwargs=...)` writes the folder and the model card (from
`pv/models/cards/<kind>.md`) and `from_pretrained(DIR or "user/name")` reads it. config.json holds the
constructor arguments under their own names (what the mixin passes back to the constructor) and, under
"pv", what pv checks when it loads the folder: the kind, the digest of the weights, the encoder
fingerprint, the training facts. Nothing in the folder is a pickle.

pv's loaders read a folder or a Hub id through `load_checkpoint`, which calls `as_checkpoint` here: the
folder becomes the dict its `.ckpt` was, so the model is built and its encoder fingerprint checked by
the same code. A folder whose config, weights and card disagree is refused in one line (`read_folder`).
This module imports nothing from pv.models (they import it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin

from pv.errors import CheckpointError

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FORMAT = 1  # config["pv"]["format"]: bump when the folder's layout changes
KINDS = {"decoder": "decoder.", "classifier": "model."}  # kind -> prefix of its weights in pv's Lightning checkpoints
PAPER_URL = "https://arxiv.org/abs/2204.09920"
# user/name as the Hub spells repository ids; a path ending like a local file is never taken for one
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
LOCAL_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json", ".yaml", ".yml")
CARDS = Path(__file__).with_name("cards")


class SharedModelError(CheckpointError):
    """A shared folder or Hub id that cannot be read, downloaded or trusted."""


def hub_id(path: str | Path) -> str | None:
    """`path` as a Hub repository id ("user/name") when it names nothing here and has that shape, else None."""
    text = str(path)
    if Path(text).exists() or not HUB_ID.fullmatch(text) or text.lower().endswith(LOCAL_SUFFIXES) or ".." in text:
        return None
    return text


def is_shared(path: str | Path) -> bool:
    """True for a folder holding config.json (written by `pv export`) and for a Hub id."""
    folder = Path(str(path))
    return (folder / CONFIG).is_file() if folder.is_dir() else hub_id(path) is not None


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of a state dict (independent of its order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{str(tensor.dtype).removeprefix('torch.')}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def download_instructions(repo: str) -> str:
    return f"on a machine with internet run `hf download {repo} --local-dir DIR` (huggingface_hub's CLI), copy DIR here and pass DIR"


@contextlib.contextmanager
def download_errors(repo: str) -> Iterator[None]:
    """huggingface_hub's download errors as one `SharedModelError` naming the id and what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )  # fmt: skip

    try:
        yield
    except LocalEntryNotFoundError:  # offline (or no connection) and not in the local cache
        raise SharedModelError(
            f"{repo} is not a file or folder here, and as a Hugging Face Hub id it could not be downloaded (no connection, "
            f"and not in the local Hugging Face cache): {download_instructions(repo)}"
        ) from None
    except RepositoryNotFoundError:
        raise SharedModelError(f"{repo} is not a file or folder here, nor a Hugging Face Hub repository (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError as err:
        raise SharedModelError(f"Hub repository {repo}: {str(err).splitlines()[0]}") from None
    except EntryNotFoundError:
        raise SharedModelError(f"Hub repository {repo} holds no {CONFIG} and {WEIGHTS}: it was not written by pv export") from None
    except (HfHubHTTPError, OSError) as err:
        raise SharedModelError(f"Could not download {repo} from the Hugging Face Hub ({str(err).splitlines()[0] if str(err) else type(err).__name__}): "
                               f"{download_instructions(repo)}") from None  # fmt: skip


def local_folder(path: str | Path, *, revision: str | None = None, cache_dir=None, force_download: bool = False,
                 token=None, local_files_only: bool = False) -> Path:  # fmt: skip
    """The folder of a shared model: `path` itself, or for a Hub id its snapshot in the Hugging Face cache
    (config.json, model.safetensors and README.md downloaded through huggingface_hub when not cached)."""
    repo = hub_id(path)
    if repo is None:
        return Path(str(path))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    options = dict(repo_id=repo, revision=revision, cache_dir=cache_dir, force_download=force_download, token=token, local_files_only=local_files_only)
    with download_errors(repo):
        config = Path(hf_hub_download(filename=CONFIG, **options))
        hf_hub_download(filename=WEIGHTS, **options)
        with contextlib.suppress(EntryNotFoundError):
            hf_hub_download(filename=CARD, **options)
    return config.parent


@dataclass
class SharedFolder:
    """What a shared folder holds, checked: `config` (config.json), `tensors` (model.safetensors)."""

    source: str
    config: dict
    tensors: dict[str, torch.Tensor]

    @property
    def kind(self) -> str | None:
        return (self.config.get("pv") or {}).get("kind")

    @property
    def arguments(self) -> dict:
        """The constructor arguments config.json records."""
        return {key: value for key, value in self.config.items() if key != "pv"}


def read_folder(path: str | Path, map_location="cpu", *, require_record: bool = True, **download) -> SharedFolder:
    """Read and cross-check a folder written by `pv export` (or its Hub id): `SharedModelError` naming it
    when config.json is missing or not pv's, the weights are not safetensors, their digest is not the
    one config.json records, or the model card (README.md) states another kind, weights or encoder.
    `require_record=False` also reads a plain `save_pretrained` folder (no pv record: nothing to cross-check)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    source = str(path)
    folder = local_folder(path, **download)
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    if not config_path.is_file():
        raise SharedModelError(f"{source} has no {CONFIG}: give a .ckpt written by pv fit or a folder written by pv export")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SharedModelError(f"{config_path} is not valid JSON ({err})") from None
    pv = config.get("pv") if isinstance(config, dict) else None
    if not isinstance(pv, dict) or pv.get("kind") not in KINDS:
        if require_record:
            raise SharedModelError(f"{config_path} has no pv record (\"pv\": {{\"kind\": decoder|classifier}}): it was not written by pv export")
        pv = None
    elif pv.get("format") != FORMAT:
        raise SharedModelError(f"{config_path} is pv export format {pv.get('format')!r}; this pv reads format {FORMAT}: update pv")
    if not weights_path.is_file():
        pickled = [name for name in ("pytorch_model.bin", "model.bin", "model.pt", "model.ckpt") if (folder / name).exists()]
        also = f" (it has {pickled[0]}: pv does not read pickled weights from shared folders)" if pickled else ""
        raise SharedModelError(f"{source} has no {WEIGHTS}{also}")
    try:
        tensors = load_file(weights_path, device=str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise SharedModelError(f"Cannot read {weights_path}: not a safetensors file, or a damaged one ({str(err).splitlines()[0]})") from None
    if pv is not None:
        if weights_sha256(tensors) != pv.get("weights_sha256"):
            raise SharedModelError(f"{source}: the weights in {WEIGHTS} are not the ones {CONFIG} describes (weights_sha256 differs): "
                                   "re-export the folder with pv export")  # fmt: skip
        check_card(folder / CARD, pv, source)
    return SharedFolder(source, config, tensors)


def card_metadata(pv: dict) -> dict[str, str]:
    """The facts a model card's YAML header states about its model (checked against config.json when loading)."""
    fingerprint = pv.get("encoder_fingerprint") or {}
    return {"pv_kind": pv["kind"], "pv_weights_sha256": pv.get("weights_sha256"), "pv_encoder_params_sha256": fingerprint.get("params_sha256")}


def check_card(path: Path, pv: dict, source: str) -> None:
    """`SharedModelError` when the card's header names another kind, weights or encoder than config.json (no card: nothing to check)."""
    if not path.is_file():
        return
    from huggingface_hub import metadata_load

    try:
        header = metadata_load(path) or {}
    except Exception as err:  # a YAML error: the card cannot vouch for anything
        raise SharedModelError(f"{path}: its YAML header cannot be read ({str(err).splitlines()[0]})") from None
    for key, value in card_metadata(pv).items():
        if key in header and str(header[key]) != str(value):
            raise SharedModelError(f"{source}: its model card ({CARD}) says {key} {header[key]}, but {CONFIG} says {value}: "
                                   "the card describes another model; re-export the folder with pv export")  # fmt: skip


def as_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A shared folder (or Hub id) as the dict of the Lightning checkpoint it was exported from: "state_dict"
    (prefixed as pv's modules save it), "decoder_config" or "classifier_config", "encoder_config" and
    "encoder_fingerprint" (decoders), "pv_training_data" when recorded."""
    shared = read_folder(path, map_location)
    pv, arguments = shared.config["pv"], shared.arguments
    prefix = KINDS[shared.kind]
    checkpoint = {"state_dict": {prefix + name: tensor for name, tensor in shared.tensors.items()}, "pv_shared": shared.source}
    if shared.kind == "decoder":
        checkpoint |= {"decoder_config": arguments, "encoder_config": dict(pv.get("encoder") or {}), "encoder_fingerprint": pv.get("encoder_fingerprint")}
    else:
        arguments.pop("weights", None)  # a shared classifier's weights are the folder's
        checkpoint["classifier_config"] = arguments
    training = (pv.get("training") or {}).get("data")
    if training is not None:
        checkpoint["pv_training_data"] = training
    return checkpoint


def state_dict_error(err: RuntimeError) -> str:
    """`load_state_dict`'s error in one line: its first problem (missing keys, unexpected keys or a size mismatch)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__)[:300]


PLAIN_CARD = """---
{{ card_data }}
---

A pv {{ kind }} saved with `save_pretrained`: `{{ kind | capitalize }}.from_pretrained` reads it back. It carries no
record of its run; `pv export` writes the model card (the classifier it explains, training data, held-out numbers)
and the record pv's commands check when they load a folder.
"""


def card_template(kind: str) -> str:
    return (CARDS / f"{kind}.md").read_text(encoding="utf-8")


class HubMixin(PyTorchModelHubMixin, library_name="pv", paper_url=PAPER_URL, tags=["perception-visualization", "explainability"]):
    """`PyTorchModelHubMixin` for pv's modules (`class Decoder(nn.Module, HubMixin, hub_kind="decoder")`): the
    model card template of the kind, and a strict, checked `from_pretrained` (weights only from safetensors)."""

    hub_kind: ClassVar[str]

    def __init_subclass__(cls, *, hub_kind: str | None = None, **kwargs) -> None:
        if hub_kind is not None:
            if hub_kind not in KINDS:
                raise ValueError(f"hub_kind must be one of {', '.join(KINDS)}, got {hub_kind!r}")
            cls.hub_kind = hub_kind
            kwargs.setdefault("model_card_template", card_template(hub_kind))
        super().__init_subclass__(**kwargs)

    def hub_config(self, pv: dict) -> dict:
        """config.json for this model: its constructor arguments (as the mixin recorded them) and pv's record."""
        return {**(self._hub_mixin_config or {}), "pv": {"format": FORMAT, "kind": self.hub_kind, **pv}}

    def generate_model_card(self, *args, **kwargs):
        """The kind's card from `pv export`'s values; a plain `save_pretrained` (no values) gets a short card saying so."""
        if "title" not in kwargs:
            from huggingface_hub import ModelCard

            return ModelCard.from_template(card_data=self._hub_mixin_info.model_card_data, template_str=PLAIN_CARD, kind=self.hub_kind)
        return super().generate_model_card(*args, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors, its header naming the framework and pv's kind (the mixin's own writes no metadata)."""
        from safetensors.torch import save_model

        save_model(self, str(Path(save_directory) / WEIGHTS), metadata={"format": "pt", "pv_kind": self.hub_kind})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """The mixin's `from_pretrained` (a folder or a Hub id), with download problems in one line."""
        with download_errors(str(pretrained_model_name_or_path)):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download: bool, local_files_only: bool, token,
                         config: dict | None = None, map_location: str = "cpu", **model_kwargs):  # fmt: skip
        shared = read_folder(model_id, map_location, require_record=False, revision=revision, cache_dir=cache_dir,
                             force_download=force_download, token=token, local_files_only=local_files_only)  # fmt: skip
        if shared.kind not in (None, cls.hub_kind):
            raise SharedModelError(f"{model_id} holds a pv {shared.kind}, not a {cls.hub_kind}")
        model = cls(**(shared.arguments | model_kwargs))
        try:
            model.load_state_dict(shared.tensors)
        except RuntimeError as err:
            raise SharedModelError(f"{model_id}: its weights do not match its {CONFIG}: {state_dict_error(err)}") from None
        model._hub_mixin_config = shared.config
        return model.eval()


def push_folder(folder: str | Path, repo_id: str, *, token: str | None, private: bool = False) -> str:
    """Upload an exported folder as it is to the Hub model repository `repo_id` (created if needed); the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    return str(api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder), commit_message="pv export"))
