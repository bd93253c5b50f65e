from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.engine_info_classes_type_0 import EngineInfoClassesType0


T = TypeVar("T", bound="EngineInfo")


@_attrs_define
class EngineInfo:
    """What the runner reports about the engine.

    Attributes:
        runner (str): The runner: `local` or `modal`.
        comfyui (None | str): The local ComfyUI's version (local runner).
        app (None | str): The Modal app jobs go to (modal runner).
        classes (EngineInfoClassesType0 | None): The Modal class per GPU class (modal runner).
    """

    runner: str
    comfyui: None | str
    app: None | str
    classes: EngineInfoClassesType0 | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.engine_info_classes_type_0 import EngineInfoClassesType0  # noqa: PLC0415

        runner = self.runner

        comfyui: None | str
        comfyui = self.comfyui

        app: None | str
        app = self.app

        classes: dict[str, Any] | None
        if isinstance(self.classes, EngineInfoClassesType0):
            classes = self.classes.to_dict()
        else:
            classes = self.classes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "runner": runner,
                "comfyui": comfyui,
                "app": app,
                "classes": classes,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.engine_info_classes_type_0 import EngineInfoClassesType0  # noqa: PLC0415

        d = dict(src_dict)
        runner = d.pop("runner")

        def _parse_comfyui(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        comfyui = _parse_comfyui(d.pop("comfyui"))

        def _parse_app(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        app = _parse_app(d.pop("app"))

        def _parse_classes(data: object) -> EngineInfoClassesType0 | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                classes_type_0 = EngineInfoClassesType0.from_dict(data)

                return classes_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(EngineInfoClassesType0 | None, data)

        classes = _parse_classes(d.pop("classes"))

        engine_info = cls(
            runner=runner,
            comfyui=comfyui,
            app=app,
            classes=classes,
        )

        engine_info.additional_properties = d
        return engine_info

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
