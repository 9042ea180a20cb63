"""Wire-compatibility of libs.api with Pachyderm 1.7.11, and the generator's check.

The expected tables below are facts read from Pachyderm v1.7.11's protos
(src/client/{pfs,pps,auth,enterprise,admin,version/versionpb}): service and
RPC names with streaming flags, field names with numbers and types, and enum
values. A client built against 1.7 interoperates only if all of these match.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from libs.api import generate
from libs.api.admin import admin_pb2, admin_pb2_grpc
from libs.api.auth import auth_pb2, auth_pb2_grpc
from libs.api.enterprise import enterprise_pb2, enterprise_pb2_grpc
from libs.api.pfs import pfs_pb2, pfs_pb2_grpc
from libs.api.pps import pps_pb2, pps_pb2_grpc
from libs.api.version.versionpb import version_pb2, version_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
OUT_DIR = REPO_ROOT / "libs" / "api"

_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_")
}


def render_type(field: descriptor.FieldDescriptor) -> str:
    """A field's type as written in a .proto file, e.g. 'repeated pfs.Commit'."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        return f"map<{render_type(key)}, {render_type(value)}>"
    if message is not None:
        base = message.full_name
    elif field.enum_type is not None:
        base = field.enum_type.full_name
    else:
        base = _SCALARS[field.type]
    return f"repeated {base}" if field.is_repeated else base


def pool() -> descriptor_pool.DescriptorPool:
    # Importing the *_pb2 modules above registered every file here.
    return descriptor_pool.Default()


MESSAGES: dict[str, dict[str, tuple[int, str]]] = {
    "pfs.Repo": {
        "name": (1, "string"),
    },
    "pfs.Branch": {
        "repo": (1, "pfs.Repo"),
        "name": (2, "string"),
    },
    "pfs.Commit": {
        "repo": (1, "pfs.Repo"),
        "id": (2, "string"),
    },
    "pfs.File": {
        "commit": (1, "pfs.Commit"),
        "path": (2, "string"),
    },
    "pfs.RepoInfo": {
        "repo": (1, "pfs.Repo"),
        "created": (2, "google.protobuf.Timestamp"),
        "size_bytes": (3, "uint64"),
        "description": (5, "string"),
        "auth_info": (6, "pfs.RepoAuthInfo"),
        "branches": (7, "repeated pfs.Branch"),
    },
    "pfs.BranchInfo": {
        "name": (1, "string"),
        "head": (2, "pfs.Commit"),
        "provenance": (3, "repeated pfs.Branch"),
        "branch": (4, "pfs.Branch"),
        "subvenance": (5, "repeated pfs.Branch"),
        "direct_provenance": (6, "repeated pfs.Branch"),
    },
    "pfs.CommitInfo": {
        "commit": (1, "pfs.Commit"),
        "parent_commit": (2, "pfs.Commit"),
        "started": (3, "google.protobuf.Timestamp"),
        "finished": (4, "google.protobuf.Timestamp"),
        "size_bytes": (5, "uint64"),
        "provenance": (6, "repeated pfs.Commit"),
        "tree": (7, "pfs.Object"),
        "description": (8, "string"),
        "subvenance": (9, "repeated pfs.CommitRange"),
        "branch_provenance": (10, "repeated pfs.Branch"),
        "child_commits": (11, "repeated pfs.Commit"),
        "ready_provenance": (12, "int64"),
    },
    "pfs.FileInfo": {
        "file": (1, "pfs.File"),
        "file_type": (2, "pfs.FileType"),
        "size_bytes": (3, "uint64"),
        "children": (6, "repeated string"),
        "hash": (7, "bytes"),
        "objects": (8, "repeated pfs.Object"),
    },
    "pfs.CreateRepoRequest": {
        "repo": (1, "pfs.Repo"),
        "description": (3, "string"),
        "update": (4, "bool"),
    },
    "pfs.DeleteRepoRequest": {
        "repo": (1, "pfs.Repo"),
        "force": (2, "bool"),
        "all": (3, "bool"),
    },
    "pfs.StartCommitRequest": {
        "parent": (1, "pfs.Commit"),
        "provenance": (2, "repeated pfs.Commit"),
        "branch": (3, "string"),
        "description": (4, "string"),
    },
    "pfs.FinishCommitRequest": {
        "commit": (1, "pfs.Commit"),
        "description": (2, "string"),
        "tree": (3, "pfs.Object"),
        "empty": (4, "bool"),
    },
    "pfs.InspectCommitRequest": {
        "commit": (1, "pfs.Commit"),
        "block_state": (2, "pfs.CommitState"),
    },
    "pfs.ListCommitRequest": {
        "repo": (1, "pfs.Repo"),
        "from": (2, "pfs.Commit"),
        "to": (3, "pfs.Commit"),
        "number": (4, "uint64"),
    },
    "pfs.CreateBranchRequest": {
        "head": (1, "pfs.Commit"),
        "s_branch": (2, "string"),
        "branch": (3, "pfs.Branch"),
        "provenance": (4, "repeated pfs.Branch"),
    },
    "pfs.FlushCommitRequest": {
        "commits": (1, "repeated pfs.Commit"),
        "to_repos": (2, "repeated pfs.Repo"),
    },
    "pfs.SubscribeCommitRequest": {
        "repo": (1, "pfs.Repo"),
        "branch": (2, "string"),
        "from": (3, "pfs.Commit"),
        "state": (4, "pfs.CommitState"),
    },
    "pfs.PutFileRequest": {
        "file": (1, "pfs.File"),
        "value": (3, "bytes"),
        "url": (5, "string"),
        "recursive": (6, "bool"),
        "delimiter": (7, "pfs.Delimiter"),
        "target_file_datums": (8, "int64"),
        "target_file_bytes": (9, "int64"),
        "overwrite_index": (10, "pfs.OverwriteIndex"),
        "header": (11, "pfs.Metadata"),
        "footer": (12, "pfs.Metadata"),
        # Ours, beyond 1.7: small files packed in one message (docs/decisions/0034).
        "batch": (100, "repeated pfs.PutFileRequest"),
    },
    "pfs.GetFileRequest": {
        "file": (1, "pfs.File"),
        "offset_bytes": (2, "int64"),
        "size_bytes": (3, "int64"),
    },
    "pfs.ListFileRequest": {
        "file": (1, "pfs.File"),
        "full": (2, "bool"),
    },
    "pfs.GlobFileRequest": {
        "commit": (1, "pfs.Commit"),
        "pattern": (2, "string"),
    },
    "pfs.DiffFileRequest": {
        "new_file": (1, "pfs.File"),
        "old_file": (2, "pfs.File"),
        "shallow": (3, "bool"),
    },
    "pfs.BuildCommitRequest": {
        "parent": (1, "pfs.Commit"),
        "provenance": (2, "repeated pfs.Commit"),
        "tree": (3, "pfs.Object"),
        "branch": (4, "string"),
        "ID": (5, "string"),
    },
    "pfs.PutObjectRequest": {
        "value": (1, "bytes"),
        "tags": (2, "repeated pfs.Tag"),
    },
    "pps.Pipeline": {
        "name": (1, "string"),
    },
    "pps.Job": {
        "id": (1, "string"),
    },
    "pps.Transform": {
        "image": (1, "string"),
        "cmd": (2, "repeated string"),
        "env": (3, "map<string, string>"),
        "secrets": (4, "repeated pps.Secret"),
        "stdin": (5, "repeated string"),
        "accept_return_code": (6, "repeated int64"),
        "debug": (7, "bool"),
        "image_pull_secrets": (9, "repeated string"),
        "user": (10, "string"),
        "working_dir": (11, "string"),
    },
    "pps.Secret": {
        "name": (1, "string"),
        "mount_path": (2, "string"),
        "env_var": (3, "string"),
        "key": (4, "string"),
    },
    "pps.Input": {
        "atom": (1, "pps.AtomInput"),
        "cross": (2, "repeated pps.Input"),
        "union": (3, "repeated pps.Input"),
        "cron": (4, "pps.CronInput"),
        "git": (5, "pps.GitInput"),
    },
    "pps.AtomInput": {
        "name": (1, "string"),
        "repo": (2, "string"),
        "branch": (3, "string"),
        "commit": (4, "string"),
        "glob": (5, "string"),
        "lazy": (6, "bool"),
        "empty_files": (8, "bool"),
    },
    "pps.CronInput": {
        "name": (1, "string"),
        "repo": (2, "string"),
        "commit": (3, "string"),
        "spec": (4, "string"),
        "start": (5, "google.protobuf.Timestamp"),
    },
    "pps.GitInput": {
        "name": (1, "string"),
        "url": (2, "string"),
        "branch": (3, "string"),
        "commit": (4, "string"),
    },
    "pps.ParallelismSpec": {
        "constant": (2, "uint64"),
        "coefficient": (3, "double"),
    },
    "pps.ResourceSpec": {
        "cpu": (1, "float"),
        "memory": (2, "string"),
        "gpu": (3, "int64"),
        "disk": (4, "string"),
    },
    "pps.ProcessStats": {
        "download_time": (1, "google.protobuf.Duration"),
        "process_time": (2, "google.protobuf.Duration"),
        "upload_time": (3, "google.protobuf.Duration"),
        "download_bytes": (4, "uint64"),
        "upload_bytes": (5, "uint64"),
    },
    "pps.Datum": {
        "id": (1, "string"),
        "job": (2, "pps.Job"),
    },
    "pps.DatumInfo": {
        "datum": (1, "pps.Datum"),
        "state": (2, "pps.DatumState"),
        "stats": (3, "pps.ProcessStats"),
        "pfs_state": (4, "pfs.File"),
        "data": (5, "repeated pfs.FileInfo"),
    },
    "pps.JobInfo": {
        "job": (1, "pps.Job"),
        "transform": (2, "pps.Transform"),
        "pipeline": (3, "pps.Pipeline"),
        "parent_job": (6, "pps.Job"),
        "started": (7, "google.protobuf.Timestamp"),
        "finished": (8, "google.protobuf.Timestamp"),
        "output_commit": (9, "pfs.Commit"),
        "state": (10, "pps.JobState"),
        "parallelism_spec": (12, "pps.ParallelismSpec"),
        "pipeline_version": (13, "uint64"),
        "service": (14, "pps.Service"),
        "egress": (15, "pps.Egress"),
        "output_branch": (17, "string"),
        "output_repo": (18, "pfs.Repo"),
        "restart": (20, "uint64"),
        "data_processed": (22, "int64"),
        "data_total": (23, "int64"),
        "worker_status": (24, "repeated pps.WorkerStatus"),
        "resource_requests": (25, "pps.ResourceSpec"),
        "input": (26, "pps.Input"),
        "new_branch": (27, "pfs.BranchInfo"),
        "incremental": (28, "bool"),
        "stats_commit": (29, "pfs.Commit"),
        "data_skipped": (30, "int64"),
        "stats": (31, "pps.ProcessStats"),
        "enable_stats": (32, "bool"),
        "salt": (33, "string"),
        "batch": (34, "bool"),
        "reason": (35, "string"),
        "resource_limits": (36, "pps.ResourceSpec"),
        "chunk_spec": (37, "pps.ChunkSpec"),
        "datum_timeout": (38, "google.protobuf.Duration"),
        "job_timeout": (39, "google.protobuf.Duration"),
        "data_failed": (40, "int64"),
        "datum_tries": (41, "int64"),
        "scheduling_spec": (42, "pps.SchedulingSpec"),
        "pod_spec": (43, "string"),
    },
    "pps.PipelineInfo": {
        "pipeline": (1, "pps.Pipeline"),
        "transform": (2, "pps.Transform"),
        "created_at": (6, "google.protobuf.Timestamp"),
        "state": (7, "pps.PipelineState"),
        "recent_error": (8, "string"),
        "job_counts": (9, "map<int32, int32>"),
        "parallelism_spec": (10, "pps.ParallelismSpec"),
        "version": (11, "uint64"),
        "egress": (15, "pps.Egress"),
        "output_branch": (16, "string"),
        "id": (17, "string"),
        "scale_down_threshold": (18, "google.protobuf.Duration"),
        "resource_requests": (19, "pps.ResourceSpec"),
        "input": (20, "pps.Input"),
        "description": (21, "string"),
        "incremental": (22, "bool"),
        "cache_size": (23, "string"),
        "enable_stats": (24, "bool"),
        "salt": (25, "string"),
        "batch": (27, "bool"),
        "reason": (28, "string"),
        "max_queue_size": (29, "int64"),
        "service": (30, "pps.Service"),
        "resource_limits": (31, "pps.ResourceSpec"),
        "chunk_spec": (32, "pps.ChunkSpec"),
        "datum_timeout": (33, "google.protobuf.Duration"),
        "job_timeout": (34, "google.protobuf.Duration"),
        "githook_url": (35, "string"),
        "spec_commit": (36, "pfs.Commit"),
        "standby": (37, "bool"),
        "stopped": (38, "bool"),
        "datum_tries": (39, "int64"),
        "scheduling_spec": (40, "pps.SchedulingSpec"),
        "pod_spec": (41, "string"),
        "hashtree_spec": (42, "pps.HashtreeSpec"),
    },
    "pps.CreatePipelineRequest": {
        "pipeline": (1, "pps.Pipeline"),
        "transform": (2, "pps.Transform"),
        "update": (5, "bool"),
        "parallelism_spec": (7, "pps.ParallelismSpec"),
        "egress": (9, "pps.Egress"),
        "output_branch": (10, "string"),
        "scale_down_threshold": (11, "google.protobuf.Duration"),
        "resource_requests": (12, "pps.ResourceSpec"),
        "input": (13, "pps.Input"),
        "description": (14, "string"),
        "incremental": (15, "bool"),
        "cache_size": (16, "string"),
        "enable_stats": (17, "bool"),
        "reprocess": (18, "bool"),
        "batch": (19, "bool"),
        "max_queue_size": (20, "int64"),
        "service": (21, "pps.Service"),
        "resource_limits": (22, "pps.ResourceSpec"),
        "chunk_spec": (23, "pps.ChunkSpec"),
        "datum_timeout": (24, "google.protobuf.Duration"),
        "job_timeout": (25, "google.protobuf.Duration"),
        "salt": (26, "string"),
        "standby": (27, "bool"),
        "datum_tries": (28, "int64"),
        "scheduling_spec": (29, "pps.SchedulingSpec"),
        "pod_spec": (30, "string"),
        "hashtree_spec": (31, "pps.HashtreeSpec"),
    },
    "pps.InspectJobRequest": {
        "job": (1, "pps.Job"),
        "block_state": (2, "bool"),
        "output_commit": (3, "pfs.Commit"),
    },
    "pps.ListJobRequest": {
        "pipeline": (1, "pps.Pipeline"),
        "input_commit": (2, "repeated pfs.Commit"),
        "output_commit": (3, "pfs.Commit"),
    },
    "pps.GetLogsRequest": {
        "job": (1, "pps.Job"),
        "pipeline": (2, "pps.Pipeline"),
        "data_filters": (3, "repeated string"),
        "master": (5, "bool"),
        "datum": (6, "pps.Datum"),
        "follow": (7, "bool"),
        "tail": (8, "int64"),
    },
    "pps.LogMessage": {
        "pipeline_name": (1, "string"),
        "job_id": (3, "string"),
        "data": (4, "repeated pps.InputFile"),
        "ts": (5, "google.protobuf.Timestamp"),
        "message": (6, "string"),
        "worker_id": (7, "string"),
        "user": (8, "bool"),
        "datum_id": (9, "string"),
        "master": (10, "bool"),
    },
    "pps.ListDatumResponse": {
        "datum_infos": (1, "repeated pps.DatumInfo"),
        "total_pages": (2, "int64"),
        "page": (3, "int64"),
    },
    "pps.DeletePipelineRequest": {
        "pipeline": (1, "pps.Pipeline"),
        "all": (4, "bool"),
        "force": (5, "bool"),
    },
    "auth.ActivateRequest": {
        "github_token": (1, "string"),
        "subject": (2, "string"),
    },
    "auth.AuthenticateRequest": {
        "github_token": (1, "string"),
        "one_time_password": (2, "string"),
    },
    "auth.AuthenticateResponse": {
        "pach_token": (1, "string"),
    },
    "auth.WhoAmIResponse": {
        "username": (1, "string"),
        "is_admin": (2, "bool"),
        "ttl": (3, "int64"),
    },
    "auth.TokenInfo": {
        "subject": (1, "string"),
        "source": (2, "auth.TokenInfo.TokenSource"),
    },
    "auth.ACLEntry": {
        "username": (1, "string"),
        "scope": (2, "auth.Scope"),
    },
    "auth.GetACLResponse": {
        "entries": (1, "repeated auth.ACLEntry"),
        "robot_entries": (2, "repeated auth.ACLEntry"),
    },
    "auth.GetAuthTokenRequest": {
        "subject": (1, "string"),
        "ttl": (2, "int64"),
    },
    "auth.GetAuthTokenResponse": {
        "token": (1, "string"),
        "subject": (2, "string"),
    },
    "auth.AuthConfig": {
        "live_config_version": (1, "int64"),
        "id_providers": (2, "repeated auth.IDProvider"),
        "saml_svc_options": (3, "auth.AuthConfig.SAMLServiceOptions"),
    },
    "auth.IDProvider.SAMLOptions": {
        "metadata_url": (1, "string"),
        "metadata_xml": (2, "bytes"),
        "group_attribute": (3, "string"),
    },
    "enterprise.ActivateRequest": {
        "activation_code": (1, "string"),
        "expires": (2, "google.protobuf.Timestamp"),
    },
    "enterprise.ActivateResponse": {
        "info": (1, "enterprise.TokenInfo"),
    },
    "enterprise.GetStateResponse": {
        "state": (1, "enterprise.State"),
        "info": (2, "enterprise.TokenInfo"),
    },
    "enterprise.TokenInfo": {
        "expires": (1, "google.protobuf.Timestamp"),
    },
    "admin.Op": {
        "op1_7": (1, "admin.Op1_7"),
        # Ours, beyond 1.7 (the extract stream, docs/decisions/0011).
        "record": (100, "pachbackup.ExtractRecord"),
        "frames": (101, "bytes"),
    },
    "admin.Op1_7": {
        "object": (2, "pfs.PutObjectRequest"),
        "tag": (3, "pfs.TagObjectRequest"),
        "repo": (4, "pfs.CreateRepoRequest"),
        "commit": (5, "pfs.BuildCommitRequest"),
        "branch": (6, "pfs.CreateBranchRequest"),
        "pipeline": (7, "pps.CreatePipelineRequest"),
    },
    "admin.ExtractRequest": {
        "URL": (1, "string"),
        "no_objects": (2, "bool"),
        "no_repos": (3, "bool"),
        "no_pipelines": (4, "bool"),
        # Ours: stream Op.frames blocks (docs/decisions/0011).
        "framed": (100, "bool"),
    },
    "admin.RestoreRequest": {
        "op": (1, "admin.Op"),
        "URL": (2, "string"),
    },
    "admin.ClusterInfo": {
        "id": (1, "string"),
    },
    "versionpb.Version": {
        "major": (1, "uint32"),
        "minor": (2, "uint32"),
        "micro": (3, "uint32"),
        "additional": (4, "string"),
    },
}
ENUMS: dict[str, dict[str, int]] = {
    "pfs.FileType": {"RESERVED": 0, "FILE": 1, "DIR": 2},
    "pfs.CommitState": {"STARTED": 0, "READY": 1, "FINISHED": 2},
    "pfs.Delimiter": {"NONE": 0, "JSON": 1, "LINE": 2, "SQL": 3},
    "pps.JobState": {
        "JOB_STARTING": 0,
        "JOB_RUNNING": 1,
        "JOB_FAILURE": 2,
        "JOB_SUCCESS": 3,
        "JOB_KILLED": 4,
    },
    "pps.DatumState": {"FAILED": 0, "SUCCESS": 1, "SKIPPED": 2, "STARTING": 3},
    "pps.PipelineState": {
        "PIPELINE_STARTING": 0,
        "PIPELINE_RUNNING": 1,
        "PIPELINE_RESTARTING": 2,
        "PIPELINE_FAILURE": 3,
        "PIPELINE_PAUSED": 4,
        "PIPELINE_STANDBY": 5,
    },
    "pps.WorkerState": {"POD_RUNNING": 0, "POD_SUCCESS": 1, "POD_FAILED": 2},
    "auth.Scope": {"NONE": 0, "READER": 1, "WRITER": 2, "OWNER": 3},
    "auth.TokenInfo.TokenSource": {"INVALID": 0, "AUTHENTICATE": 1, "GET_TOKEN": 2},
    "enterprise.State": {"NONE": 0, "ACTIVE": 1, "EXPIRED": 2},
}
SERVICES: dict[str, list[tuple[str, bool, bool]]] = {
    "pfs.API": [
        ("CreateRepo", False, False),
        ("InspectRepo", False, False),
        ("ListRepo", False, False),
        ("DeleteRepo", False, False),
        ("StartCommit", False, False),
        ("FinishCommit", False, False),
        ("InspectCommit", False, False),
        ("ListCommit", False, False),
        ("ListCommitStream", False, True),
        ("DeleteCommit", False, False),
        ("FlushCommit", False, True),
        ("SubscribeCommit", False, True),
        ("BuildCommit", False, False),
        ("CreateBranch", False, False),
        ("InspectBranch", False, False),
        ("ListBranch", False, False),
        ("DeleteBranch", False, False),
        ("PutFile", True, False),
        ("CopyFile", False, False),
        ("GetFile", False, True),
        ("InspectFile", False, False),
        ("ListFile", False, False),
        ("ListFileStream", False, True),
        ("GlobFile", False, False),
        ("GlobFileStream", False, True),
        ("DiffFile", False, False),
        ("DeleteFile", False, False),
        ("DeleteAll", False, False),
    ],
    "pfs.ObjectAPI": [
        ("PutObject", True, False),
        ("PutObjectSplit", True, False),
        ("GetObject", False, True),
        ("GetObjects", False, True),
        ("TagObject", False, False),
        ("InspectObject", False, False),
        ("CheckObject", False, False),
        ("ListObjects", False, True),
        ("DeleteObjects", False, False),
        ("GetTag", False, True),
        ("InspectTag", False, False),
        ("ListTags", False, True),
        ("DeleteTags", False, False),
        ("Compact", False, False),
    ],
    "pps.API": [
        ("CreateJob", False, False),
        ("InspectJob", False, False),
        ("ListJob", False, False),
        ("ListJobStream", False, True),
        ("FlushJob", False, True),
        ("DeleteJob", False, False),
        ("StopJob", False, False),
        ("InspectDatum", False, False),
        ("ListDatum", False, False),
        ("ListDatumStream", False, True),
        ("RestartDatum", False, False),
        ("CreatePipeline", False, False),
        ("InspectPipeline", False, False),
        ("ListPipeline", False, False),
        ("DeletePipeline", False, False),
        ("StartPipeline", False, False),
        ("StopPipeline", False, False),
        ("RerunPipeline", False, False),
        ("DeleteAll", False, False),
        ("GetLogs", False, True),
        ("GarbageCollect", False, False),
        ("ActivateAuth", False, False),
        # Additions (not in 1.7): Pachyderm 2.x's secret RPCs.
        ("CreateSecret", False, False),
        ("DeleteSecret", False, False),
        ("ListSecret", False, False),
        ("InspectSecret", False, False),
    ],
    "auth.API": [
        ("Activate", False, False),
        ("Deactivate", False, False),
        ("GetConfiguration", False, False),
        ("SetConfiguration", False, False),
        ("GetAdmins", False, False),
        ("ModifyAdmins", False, False),
        ("Authenticate", False, False),
        ("Authorize", False, False),
        ("WhoAmI", False, False),
        ("GetScope", False, False),
        ("SetScope", False, False),
        ("GetACL", False, False),
        ("SetACL", False, False),
        ("GetAuthToken", False, False),
        ("ExtendAuthToken", False, False),
        ("RevokeAuthToken", False, False),
        ("SetGroupsForUser", False, False),
        ("ModifyMembers", False, False),
        ("GetGroups", False, False),
        ("GetUsers", False, False),
        ("GetOneTimePassword", False, False),
        # Addition (not in 1.7): later Pachyderm's OIDC login.
        ("GetOIDCLogin", False, False),
    ],
    "enterprise.API": [
        ("Activate", False, False),
        ("GetState", False, False),
        ("Deactivate", False, False),
    ],
    "admin.API": [
        ("Extract", False, True),
        ("ExtractPipeline", False, False),
        ("Restore", True, False),
        ("InspectCluster", False, False),
    ],
    "versionpb.API": [
        ("GetVersion", False, False),
    ],
}


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_rpcs_and_streaming(service_name: str) -> None:
    service = pool().FindServiceByName(service_name)
    actual = [(m.name, m.client_streaming, m.server_streaming) for m in service.methods]
    assert actual == SERVICES[service_name]


def test_packages_define_exactly_the_reference_services() -> None:
    files = [
        pfs_pb2.DESCRIPTOR,
        pps_pb2.DESCRIPTOR,
        auth_pb2.DESCRIPTOR,
        enterprise_pb2.DESCRIPTOR,
        admin_pb2.DESCRIPTOR,
        version_pb2.DESCRIPTOR,
    ]
    defined = sorted(s.full_name for f in files for s in f.services_by_name.values())
    assert defined == sorted(SERVICES)


@pytest.mark.parametrize("message_name", sorted(MESSAGES))
def test_message_fields(message_name: str) -> None:
    message = pool().FindMessageTypeByName(message_name)
    actual = {f.name: (f.number, render_type(f)) for f in message.fields}
    assert actual == MESSAGES[message_name]


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enum_values(enum_name: str) -> None:
    enum = pool().FindEnumTypeByName(enum_name)
    assert {v.name: v.number for v in enum.values} == ENUMS[enum_name]


def test_reserved_field_numbers_stay_reserved() -> None:
    def reserved(message: descriptor.Descriptor) -> set[int]:
        proto = descriptor_pb2.FileDescriptorProto.FromString(message.file.serialized_pb)
        for candidate in proto.message_type:
            if candidate.name == message.name:
                return {n for r in candidate.reserved_range for n in range(r.start, r.end)}
        raise AssertionError(message.full_name)

    assert reserved(pfs_pb2.PutFileRequest.DESCRIPTOR) == {2}
    assert reserved(pfs_pb2.RepoInfo.DESCRIPTOR) == {4}
    assert reserved(pps_pb2.PipelineInfo.DESCRIPTOR) == {3, 4, 26}
    assert reserved(pps_pb2.JobInfo.DESCRIPTOR) == {4, 5}
    assert reserved(pps_pb2.AtomInput.DESCRIPTOR) == {7}


def test_encoded_bytes_match_the_1_7_wire_format() -> None:
    commit = pfs_pb2.Commit(repo=pfs_pb2.Repo(name="a"), id="b")
    assert commit.SerializeToString() == b"\n\x03\n\x01a\x12\x01b"
    put = pfs_pb2.PutFileRequest(overwrite_index=pfs_pb2.OverwriteIndex(index=0), value=b"x")
    assert put.SerializeToString() == b"\x1a\x01xR\x00"
    spec = pps_pb2.CreatePipelineRequest(salt="s", datum_tries=3)
    assert spec.SerializeToString() == b"\xd2\x01\x01s\xe0\x01\x03"
    assert version_pb2.Version(major=1, minor=7, micro=11).SerializeToString() == (
        b"\x08\x01\x10\x07\x18\x0b"
    )


def test_grpc_modules_expose_stubs_and_servicers() -> None:
    for module in (
        pfs_pb2_grpc,
        pps_pb2_grpc,
        auth_pb2_grpc,
        enterprise_pb2_grpc,
        admin_pb2_grpc,
        version_pb2_grpc,
    ):
        assert hasattr(module, "APIStub")
        assert hasattr(module, "APIServicer")
        assert hasattr(module, "add_APIServicer_to_server")
    assert hasattr(pfs_pb2_grpc, "ObjectAPIStub")


# ---- the generator --------------------------------------------------------


def test_check_passes_on_the_committed_tree() -> None:
    assert generate.main(["--check"]) == 0


def test_check_fails_when_a_proto_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, protos)
    pfs_proto = protos / "pfs" / "pfs.proto"
    text = pfs_proto.read_text()
    pfs_proto.write_text(text.replace("message Repo {\n", "message Repo {\n  bool extra = 99;\n"))

    code = generate.main(["--check", "--proto-dir", str(protos), "--out-dir", str(OUT_DIR)])

    assert code == 1
    err = capsys.readouterr().err
    assert "stale: pfs/pfs_pb2.py" in err
    assert "stale: pfs/pfs_pb2.pyi" in err
    assert "pps/pps_pb2.py" not in err


def test_generate_writes_a_tree_that_then_checks_clean(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert generate.main(["--out-dir", str(out)]) == 0
    assert (out / "pfs" / "__init__.py").exists()
    assert (out / "version" / "versionpb" / "__init__.py").exists()
    grpc_module = (out / "pfs" / "pfs_pb2_grpc.py").read_text()
    assert "from libs.api.pfs import pfs_pb2 as" in grpc_module
    assert generate.main(["--check", "--out-dir", str(out)]) == 0


def test_leftover_generated_files_are_reported_and_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert generate.main(["--out-dir", str(out)]) == 0
    leftover = out / "pfs" / "old_pb2.py"
    leftover.write_text("")

    assert generate.main(["--check", "--out-dir", str(out)]) == 1
    assert "no longer generated: pfs/old_pb2.py" in capsys.readouterr().err

    assert generate.main(["--out-dir", str(out)]) == 0
    assert not leftover.exists()


def test_output_is_deterministic() -> None:
    assert generate.generate(PROTO_DIR) == generate.generate(PROTO_DIR)


def test_rewrite_only_touches_our_modules() -> None:
    source = (
        "from pfs import pfs_pb2 as pfs_dot_pfs__pb2\n"
        "from google.protobuf import empty_pb2\n"
        "import x.pfs.pfs_pb2\n"
        "y: pfs.pfs_pb2.Repo\n"
    )
    assert generate.rewrite_imports(source, ["pfs.pfs_pb2"]) == (
        "from libs.api.pfs import pfs_pb2 as pfs_dot_pfs__pb2\n"
        "from google.protobuf import empty_pb2\n"
        "import x.pfs.pfs_pb2\n"
        "y: libs.api.pfs.pfs_pb2.Repo\n"
    )
