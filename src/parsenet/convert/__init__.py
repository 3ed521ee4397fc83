"""Converters from other frameworks' files to parsenet's (:mod:`parsenet.convert.caffe`)."""

from parsenet.convert.caffe import KNOWN_FILES, Converted, convert_caffe

__all__ = ["convert_caffe", "Converted", "KNOWN_FILES"]
