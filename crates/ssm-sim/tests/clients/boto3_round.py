# A second AWS client against ssm-sim: boto3, configured only by the environment the
# simulator exports (as a user's deploy script would be). Prints "ok" when every call
# got the answer AWS would give; any exception fails the test that runs this.
import sys
import time

import boto3
from botocore.exceptions import ClientError

instance = sys.argv[1]
bucket = sys.argv[2]

ssm = boto3.client("ssm")
info = ssm.describe_instance_information()["InstanceInformationList"]
assert [i["InstanceId"] for i in info] == [instance], info
assert info[0]["PingStatus"] == "Online", info

s = ssm.start_session(
    Target=instance,
    DocumentName="AWS-StartPortForwardingSession",
    Parameters={"portNumber": ["80"]},
)
assert s["StreamUrl"].startswith("ws") and s["TokenValue"], s.keys()
assert ssm.terminate_session(SessionId=s["SessionId"])["SessionId"] == s["SessionId"]

cmd = ssm.send_command(
    InstanceIds=[instance],
    DocumentName="AWS-RunShellScript",
    Parameters={"commands": ["echo from-the-instance"]},
)["Command"]
for _ in range(200):
    inv = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=instance)
    if inv["Status"] not in ("Pending", "InProgress", "Delayed"):
        break
    time.sleep(0.05)
assert inv["Status"] == "Success", inv
assert inv["StandardOutputContent"] == "from-the-instance\n", inv

try:
    ssm.start_session(Target="i-00000000000000000")
    raise AssertionError("an unknown target was accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "TargetNotConnected", e.response

who = boto3.client("sts").get_caller_identity()
assert who["Account"] == "123456789012", who

tagged = boto3.client("resourcegroupstaggingapi").get_resources(
    TagFilters=[{"Key": "Name"}], ResourceTypeFilters=["ec2:instance"]
)["ResourceTagMappingList"]
assert [t["ResourceARN"].rsplit("/", 1)[1] for t in tagged] == [instance], tagged

s3 = boto3.client("s3")
s3.put_object(Bucket=bucket, Key="from-boto3.txt", Body=b"hello")
assert s3.get_object(Bucket=bucket, Key="from-boto3.txt")["Body"].read() == b"hello"
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
assert keys == ["from-boto3.txt"], keys
url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "from-boto3.txt"})
import urllib.request
assert urllib.request.urlopen(url).read() == b"hello"
s3.delete_object(Bucket=bucket, Key="from-boto3.txt")
print("ok")
