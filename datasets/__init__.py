"""Dataset readers and Lightning DataModules (installed as ``equimol.datasets``)."""
