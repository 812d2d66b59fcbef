"""Help text shared by the options several stages have (one wording for ``--data-dir`` everywhere)."""

DATA_DIR = "Folder holding the dataset files."
DEVICE = "auto, cpu or cuda[:N]."
SEED = "Random seed."
AMP = "bfloat16 autocast."
BATCH = "Batch size."
WORKERS = (
    "DataLoader worker processes for every pass over images (default: none where no GPU is visible; on a GPU machine "
    "its cores per torchrun rank less one, at most 8)."
)
MODEL_KWARGS = "JSON keyword arguments of a MODULE:CALLABLE architecture, e.g. '{\"width\": 2}'."
VAL_FRACTION = "Seeded, label-stratified part of the training split held out for decisions"
VAL_SOURCE = "Where the validation split comes from:"
SPLIT_SEED = (
    "Redraw the validation split with this seed from the images the checkpoint's training held out (use a "
    "--val-fraction below what it held out); varies the split between repeated trials."
)
CHECKPOINTS_DATA = "Default: the dataset the checkpoint was trained on."
