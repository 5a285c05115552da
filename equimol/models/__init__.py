"""equimol.models"""
