"""equimol.nn"""
