"""The classes peft and transformers look for to tell whether 4-bit layers exist. No model of
the rehearsal is quantised, so none of its layers is an instance of these."""

import torch


class Linear4bit(torch.nn.Linear):
    pass


class Linear8bitLt(torch.nn.Linear):
    pass


class Params4bit(torch.nn.Parameter):
    pass


class Int8Params(torch.nn.Parameter):
    pass
