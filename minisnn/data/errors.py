"""The one error every data set raises."""


class DatasetError(RuntimeError):
    """A data set is missing, cannot be downloaded, or a file of it is corrupt or unsafe."""
