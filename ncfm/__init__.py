"""ncfm: from a Kaggle image-classification competition's photos to a validated, uploaded submission.

The pipeline, one command per arrow:
    data/train/... -> split_train_val -> data/folds.csv + competition.json -> train --fold k
    -> runs/NAME/fold<k>/ -> predict -> submissions/NAME.csv -> validate -> submit
"""

__version__ = "0.1.0"


class NcfmError(Exception):
    """A problem the user can fix (bad input file, missing folder, ...).

    The message names the file or value and the fix; the CLI prints it without a
    traceback and exits with status 2.
    """
