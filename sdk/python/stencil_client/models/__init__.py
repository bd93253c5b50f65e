"""Contains all the data models used in inputs/outputs"""

from .account_event import AccountEvent
from .account_event_list import AccountEventList
from .account_event_type import AccountEventType
from .batch import Batch
from .budget_info import BudgetInfo
from .budget_threshold_data import BudgetThresholdData
from .budget_threshold_webhook_data import BudgetThresholdWebhookData
from .budget_threshold_webhook_event import BudgetThresholdWebhookEvent
from .charged_to import ChargedTo
from .cost import Cost
from .delivery_status import DeliveryStatus
from .engine_info import EngineInfo
from .engine_info_classes_type_0 import EngineInfoClassesType0
from .estimate import Estimate
from .field_error import FieldError
from .health import Health
from .image_ref import ImageRef
from .img_2_img_v1_multipart import Img2ImgV1Multipart
from .img_2_img_v1_params import Img2ImgV1Params
from .img_2_img_v1_request import Img2ImgV1Request
from .img_2_img_v1_sampler import Img2ImgV1Sampler
from .img_2_img_v1_scheduler import Img2ImgV1Scheduler
from .inpaint_v1_multipart import InpaintV1Multipart
from .inpaint_v1_params import InpaintV1Params
from .inpaint_v1_request import InpaintV1Request
from .inpaint_v1_sampler import InpaintV1Sampler
from .inpaint_v1_scheduler import InpaintV1Scheduler
from .job import Job
from .job_event import JobEvent
from .job_event_type import JobEventType
from .job_inputs import JobInputs
from .job_list import JobList
from .job_status import JobStatus
from .job_webhook_data import JobWebhookData
from .job_webhook_event import JobWebhookEvent
from .job_webhook_event_type import JobWebhookEventType
from .media_input import MediaInput
from .metering import Metering
from .output import Output
from .output_format import OutputFormat
from .param_schema import ParamSchema
from .param_schema_type import ParamSchemaType
from .params_schema import ParamsSchema
from .params_schema_properties import ParamsSchemaProperties
from .problem import Problem
from .problem_type import ProblemType
from .ready import Ready
from .retired_template_params import RetiredTemplateParams
from .template_info import TemplateInfo
from .template_list import TemplateList
from .tenant_usage_group_by import TenantUsageGroupBy
from .timings import Timings
from .txt_2_img_v1_params import Txt2ImgV1Params
from .txt_2_img_v1_request import Txt2ImgV1Request
from .txt_2_img_v1_sampler import Txt2ImgV1Sampler
from .txt_2_img_v1_scheduler import Txt2ImgV1Scheduler
from .txt_2_img_v1_style import Txt2ImgV1Style
from .upscale_v1_method import UpscaleV1Method
from .upscale_v1_multipart import UpscaleV1Multipart
from .upscale_v1_params import UpscaleV1Params
from .upscale_v1_request import UpscaleV1Request
from .upscale_v2_multipart import UpscaleV2Multipart
from .upscale_v2_params import UpscaleV2Params
from .upscale_v2_request import UpscaleV2Request
from .usage import Usage
from .usage_group import UsageGroup
from .usage_group_by import UsageGroupBy
from .webhook_attempt import WebhookAttempt
from .webhook_delivery import WebhookDelivery
from .webhook_delivery_list import WebhookDeliveryList
from .webhook_endpoint import WebhookEndpoint
from .webhook_endpoint_request import WebhookEndpointRequest
from .webhook_event_type import WebhookEventType
from .webhook_output import WebhookOutput
from .webhook_secret import WebhookSecret

__all__ = (
    "AccountEvent",
    "AccountEventList",
    "AccountEventType",
    "Batch",
    "BudgetInfo",
    "BudgetThresholdData",
    "BudgetThresholdWebhookData",
    "BudgetThresholdWebhookEvent",
    "ChargedTo",
    "Cost",
    "DeliveryStatus",
    "EngineInfo",
    "EngineInfoClassesType0",
    "Estimate",
    "FieldError",
    "Health",
    "ImageRef",
    "Img2ImgV1Multipart",
    "Img2ImgV1Params",
    "Img2ImgV1Request",
    "Img2ImgV1Sampler",
    "Img2ImgV1Scheduler",
    "InpaintV1Multipart",
    "InpaintV1Params",
    "InpaintV1Request",
    "InpaintV1Sampler",
    "InpaintV1Scheduler",
    "Job",
    "JobEvent",
    "JobEventType",
    "JobInputs",
    "JobList",
    "JobStatus",
    "JobWebhookData",
    "JobWebhookEvent",
    "JobWebhookEventType",
    "MediaInput",
    "Metering",
    "Output",
    "OutputFormat",
    "ParamSchema",
    "ParamSchemaType",
    "ParamsSchema",
    "ParamsSchemaProperties",
    "Problem",
    "ProblemType",
    "Ready",
    "RetiredTemplateParams",
    "TemplateInfo",
    "TemplateList",
    "TenantUsageGroupBy",
    "Timings",
    "Txt2ImgV1Params",
    "Txt2ImgV1Request",
    "Txt2ImgV1Sampler",
    "Txt2ImgV1Scheduler",
    "Txt2ImgV1Style",
    "UpscaleV1Method",
    "UpscaleV1Multipart",
    "UpscaleV1Params",
    "UpscaleV1Request",
    "UpscaleV2Multipart",
    "UpscaleV2Params",
    "UpscaleV2Request",
    "Usage",
    "UsageGroup",
    "UsageGroupBy",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryList",
    "WebhookEndpoint",
    "WebhookEndpointRequest",
    "WebhookEventType",
    "WebhookOutput",
    "WebhookSecret",
)
